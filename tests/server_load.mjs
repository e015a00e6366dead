// server_load.mjs BASE MODE ...: the clients of tests/server_load.sh, on node's own http module
// (one connection per request, no keep-alive, loopback only). Prints one JSON value.
//
//   alone PROMPTS_JSON MAX_TOKENS          each prompt served alone (one request at a time, not
//                                          streamed): ["text", ...]
//   round PROMPTS_JSON MAX_TOKENS C R      C concurrent clients, each streaming R requests one
//                                          after another; client c's request r uses prompt
//                                          (c * R + r) % P: [{prompt, text, finish, chunks}]
//   leave C                                C clients that start a long stream and close the
//                                          socket after its first chunk: the number that did
//
// A stream is checked as it is read: every event is "data: {json}" or the final "data: [DONE]",
// every chunk carries the same id and choice index 0, nothing follows [DONE]. A violation or an
// HTTP error ends the run with exit 1 and the reason.
import http from "node:http";

const [base, mode, ...args] = process.argv.slice(2);
const url = new URL("/v1/completions", base);
const die = (why) => {
  console.error(why);
  process.exit(1);
};

function post(body, onData) {
  return new Promise((resolve, reject) => {
    const req = http.request(url, {
      method: "POST",
      agent: false,
      headers: { "Content-Type": "application/json" },
    });
    req.setTimeout(60000, () => req.destroy(new Error("timeout")));
    req.on("error", reject);
    req.on("response", (res) => {
      let raw = "";
      res.setEncoding("utf8");
      res.on("data", (c) => {
        raw += c;
        if (onData && onData(raw, req)) resolve(raw);
      });
      res.on("end", () =>
        res.statusCode === 200 ? resolve(raw) : reject(new Error(`${res.statusCode} ${raw}`)),
      );
      res.on("error", reject);
    });
    req.end(JSON.stringify(body));
  });
}

function readStream(raw) {
  if (!raw.endsWith("data: [DONE]\n\n")) throw new Error("no final [DONE]: " + raw.slice(-200));
  const events = raw.slice(0, -2).split("\n\n");
  let text = "", finish = null, id = null, chunks = 0;
  events.forEach((e, i) => {
    if (!e.startsWith("data: ") || e.includes("\n")) throw new Error("bad event " + e);
    if (e === "data: [DONE]") {
      if (i !== events.length - 1) throw new Error("[DONE] before the end");
      return;
    }
    const d = JSON.parse(e.slice(6));
    if (id === null) id = d.id;
    if (d.id !== id) throw new Error(`chunk of ${d.id} in the stream of ${id}`);
    if (d.choices.length !== 1 || d.choices[0].index !== 0) throw new Error("bad choices " + e);
    if (finish !== null) throw new Error("a chunk after finish_reason");
    text += d.choices[0].text;
    finish = d.choices[0].finish_reason;
    chunks++;
  });
  return { text, finish, chunks };
}

const greedy = (prompt, max) => ({ prompt, max_tokens: max, temperature: 0, ignore_eos: true });

async function alone(prompts, max) {
  const out = [];
  for (const p of prompts) out.push(JSON.parse(await post(greedy(p, max))).choices[0].text);
  return out;
}

async function round(prompts, max, clients, each) {
  const results = [];
  const client = async (c) => {
    for (let r = 0; r < each; r++) {
      const prompt = (c * each + r) % prompts.length;
      const raw = await post({ ...greedy(prompts[prompt], max), stream: true });
      results.push({ prompt, ...readStream(raw) });
    }
  };
  await Promise.all(Array.from({ length: clients }, (_, c) => client(c)));
  return results;
}

async function leave(clients) {
  let left = 0;
  const one = () =>
    post({ prompt: [5], max_tokens: 200, ignore_eos: true, stream: true }, (raw, req) => {
      if (!raw.includes("\n\n")) return false;
      req.destroy();
      left++;
      return true;
    }).catch(() => {});
  await Promise.all(Array.from({ length: clients }, one));
  return left;
}

try {
  let v;
  if (mode === "alone") v = await alone(JSON.parse(args[0]), +args[1]);
  else if (mode === "round") v = await round(JSON.parse(args[0]), +args[1], +args[2], +args[3]);
  else if (mode === "leave") v = await leave(+args[0]);
  else die("unknown mode " + mode);
  process.stdout.write(JSON.stringify(v));
} catch (e) {
  die(`${mode}: ${e.message}`);
}
