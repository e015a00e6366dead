// The official openai npm client against duet-server: run from the npm cache folder (where
// node_modules is) as `node server_openai.mjs BASE_URL API_KEY PROMPT_IDS_JSON WANT_FILE
// MESSAGES_JSON WANT_CHAT_FILE` (the WANT files hold {"text": ...}; {} leaves chat out).
// Non-streaming and streaming completions must give the greedy text the caller computed with
// duet-run, the stream must end with a usage chunk; chat, streamed or not, the greedy text of the
// prompt the model's template renders; a seed must give the same text twice; a stop string must
// cut the text before its first occurrence with finish_reason "stop"; n = 2 must give two such
// choices with logprobs (completions and chat); and a wrong model must raise the client's
// NotFoundError (404) carrying our error object.
import OpenAI from "openai";
import { readFileSync } from "node:fs";

const [base, key, promptJson, wantFile, messagesJson, wantChatFile] = process.argv.slice(2);
const want = JSON.parse(readFileSync(wantFile, "utf8")).text;
const wantChat = JSON.parse(readFileSync(wantChatFile, "utf8")).text;
const client = new OpenAI({ baseURL: base + "/v1", apiKey: key, maxRetries: 0, timeout: 60000 });
const prompt = JSON.parse(promptJson);
const params = { model: "tiny", prompt, max_tokens: 24, temperature: 0, ignore_eos: true };
let failed = 0;
const check = (name, ok, got) => {
  if (!ok) {
    failed++;
    console.log(`FAIL: ${name}: ${JSON.stringify(got)}`);
  }
};

const models = await client.models.list();
check("models.list", models.data.length === 1 && models.data[0].id === "tiny", models.data);

const c = await client.completions.create(params);
check("completion text", c.choices[0].text === want, c);
check("completion usage", c.usage.completion_tokens === 24 && c.choices[0].finish_reason === "length", c);

const stream = await client.completions.create({
  ...params, stream: true, stream_options: { include_usage: true },
});
let text = "", usage = null, finish = null;
for await (const chunk of stream) {
  if (chunk.choices.length) {
    text += chunk.choices[0].text;
    finish = chunk.choices[0].finish_reason || finish;
  } else {
    usage = chunk.usage;
  }
}
check("stream text", text === want, text);
check("stream usage", usage && usage.completion_tokens === 24 && finish === "length", usage);

try {
  await client.completions.create({ ...params, model: "gpt-4" });
  check("wrong model raises", false, "no error");
} catch (e) {
  check("wrong model raises NotFoundError", e instanceof OpenAI.NotFoundError && e.status === 404 &&
        e.error && e.error.code === "model_not_found", String(e));
}
const two = await client.completions.create({ ...params, n: 2, logprobs: 2 });
check("n = 2 choices", two.choices.length === 2 && two.choices.every((ch, i) => ch.index === i && ch.text === want), two);
check("logprobs", two.choices.every(ch => ch.logprobs.tokens.length === 24 &&
      ch.logprobs.token_logprobs.every(v => typeof v === "number" && v <= 0) &&
      ch.logprobs.top_logprobs.every(m => Object.keys(m).length >= 1 && Object.keys(m).length <= 3) &&
      ch.logprobs.text_offset[0] === 0), two.choices[0].logprobs);
const chat = await client.chat.completions.create({
  model: "tiny", messages: [{ role: "user", content: "Hi" }], max_tokens: 6, temperature: 0,
  ignore_eos: true, n: 2, logprobs: true, top_logprobs: 2,
  chat_template: "{% for m in messages %}{{ m.content }}{% endfor %}",
});
check("chat n = 2 with logprobs", chat.choices.length === 2 && chat.choices.every(ch =>
      ch.logprobs.content.length === 6 && ch.logprobs.content.every(e => e.top_logprobs.length === 2)), chat);
// Chat with the model's own template, streamed and not.
if (wantChat !== undefined) {
  const messages = JSON.parse(messagesJson);
  const chatParams = { model: "tiny", messages, max_tokens: 24, temperature: 0, ignore_eos: true };
  const one = await client.chat.completions.create(chatParams);
  check("chat text", one.choices[0].message.role === "assistant" && one.choices[0].message.content === wantChat, one);
  let streamed = "", role = null;
  for await (const chunk of await client.chat.completions.create({ ...chatParams, stream: true })) {
    for (const ch of chunk.choices) {
      if (ch.delta.role) role = ch.delta.role;
      streamed += ch.delta.content || "";
    }
  }
  check("chat stream text", role === "assistant" && streamed === wantChat, streamed);
}
// Seeds: the same seed, the same text; another seed, (almost surely) another text.
const seeded = { ...params, temperature: 1, seed: 1234 };
const s1 = await client.completions.create(seeded), s2 = await client.completions.create(seeded);
const s3 = await client.completions.create({ ...seeded, seed: 4321 });
check("seed repeats", s1.choices[0].text === s2.choices[0].text, [s1.choices[0].text, s2.choices[0].text]);
check("another seed differs", s1.choices[0].text !== s3.choices[0].text, s3.choices[0].text);
// A stop string from the middle of the greedy text: the text ends just before it.
const chars = Array.from(want);
const stop = chars.slice(8, 11).join("");
const cut = want.slice(0, want.indexOf(stop));
const stopped = await client.completions.create({ ...params, stop: [stop] });
check("stop string", stop.length > 0 && stopped.choices[0].text === cut &&
      stopped.choices[0].finish_reason === "stop", [stop, cut, stopped.choices[0]]);
try {
  await client.completions.create({ ...params, best_of: 2 });
  check("best_of = 2 raises", false, "no error");
} catch (e) {
  check("best_of = 2 raises BadRequestError", e instanceof OpenAI.BadRequestError && /not supported yet/.test(e.message), String(e));
}
console.log(`server_openai: ${failed ? failed + " failed" : "all passed"}`);
process.exit(failed ? 1 : 0);
