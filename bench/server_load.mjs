// server_load.mjs: the load generator of bench/run-server.sh, a plain client on node's http
// module (one connection per request, loopback). Every request streams a greedy completion of a
// token-id prompt with ignore_eos and stream_options.include_usage. Prints one JSON object.
//
//   node server_load.mjs BASE poisson RATE N PROMPT_LEN MAX_TOKENS VOCAB SEED
//       N requests, arrivals a Poisson process of RATE requests/s (exponential gaps from a
//       seeded generator, so every run sends the same schedule)
//   node server_load.mjs BASE burst C PROMPT_LEN MAX_TOKENS VOCAB SEED
//       C requests sent at once; also reads /metrics before and after for the engine's step
//       seconds (duet:engine_step_seconds_total): engine_share = their growth / the wall time
//
//   node server_load.mjs - prompts N PROMPT_LEN VOCAB SEED
//       prints the prompts burst and poisson send, one comma-separated line each (duet-run
//       --prompts FILE reads them: the same load on the engine alone)
//
// Per request: TTFT (sent to first text chunk), inter-token latencies (the gaps between text
// chunks: a chunk is one engine step's text, which a speculative step makes of several tokens,
// as vLLM's benchmark_serving counts them), TPOT ((last chunk - first chunk) / (tokens - 1)).
// Reported: throughput (completion tokens / wall), p50 and p99 of each.
import http from "node:http";

const [base, mode, ...a] = process.argv.slice(2);

function rng(seed) {
  let s = BigInt(seed) || 1n;
  return () => {
    s ^= s << 13n; s &= (1n << 64n) - 1n;
    s ^= s >> 7n;
    s ^= s << 17n; s &= (1n << 64n) - 1n;
    return Number(s >> 11n) / 2 ** 53;
  };
}

function get(path) {
  return new Promise((resolve, reject) =>
    http.get(new URL(path, base), { agent: false }, (res) => {
      let raw = "";
      res.setEncoding("utf8");
      res.on("data", (c) => (raw += c)).on("end", () => resolve(raw));
    }).on("error", reject));
}

async function stepSeconds() {
  const m = /^duet:engine_step_seconds_total\{[^}]*\} (\S+)$/m.exec(await get("/metrics"));
  return m ? Number(m[1]) : NaN;
}

// One streamed request; resolves {ttft, itl: [...], tpot, tokens, e2e} in seconds.
function one(prompt, maxTokens) {
  return new Promise((resolve, reject) => {
    const t0 = performance.now();
    let first = null, last = null, buf = "", tokens = 0, usage = null;
    const itl = [];
    const req = http.request(new URL("/v1/completions", base), {
      method: "POST", agent: false, headers: { "Content-Type": "application/json" },
    });
    req.setTimeout(600000, () => req.destroy(new Error("timeout")));
    req.on("error", reject);
    req.on("response", (res) => {
      if (res.statusCode !== 200) return reject(new Error(`HTTP ${res.statusCode}`));
      res.setEncoding("utf8");
      res.on("data", (c) => {
        const now = performance.now();
        buf += c;
        let i;
        while ((i = buf.indexOf("\n\n")) >= 0) {
          const e = buf.slice(0, i);
          buf = buf.slice(i + 2);
          if (e === "data: [DONE]") continue;
          const d = JSON.parse(e.slice(6));
          if (d.usage) usage = d.usage;
          if (!d.choices.length || !d.choices[0].text) continue;
          if (first === null) first = now;
          else itl.push((now - last) / 1000);
          last = now;
        }
      });
      res.on("end", () => {
        const end = performance.now();
        tokens = usage ? usage.completion_tokens : 0;
        resolve({
          ttft: (first - t0) / 1000, itl, tokens, e2e: (end - t0) / 1000,
          tpot: tokens > 1 ? (last - first) / 1000 / (tokens - 1) : 0,
        });
      });
    });
    req.end(JSON.stringify({
      prompt, max_tokens: maxTokens, temperature: 0, ignore_eos: true, stream: true,
      stream_options: { include_usage: true },
    }));
  });
}

const pct = (xs, p) => {
  if (!xs.length) return null;
  const s = [...xs].sort((x, y) => x - y);
  return s[Math.min(s.length - 1, Math.floor((p / 100) * s.length))];
};

function summary(rs, wall) {
  const tokens = rs.reduce((s, r) => s + r.tokens, 0);
  const itl = rs.flatMap((r) => r.itl);
  const ms = (x) => (x === null ? null : +(x * 1000).toFixed(2));
  return {
    requests: rs.length, completion_tokens: tokens, wall_s: +wall.toFixed(3),
    throughput_tok_s: +(tokens / wall).toFixed(1), request_rate: +(rs.length / wall).toFixed(3),
    ttft_ms: { p50: ms(pct(rs.map((r) => r.ttft), 50)), p99: ms(pct(rs.map((r) => r.ttft), 99)) },
    itl_ms: { p50: ms(pct(itl, 50)), p99: ms(pct(itl, 99)) },
    tpot_ms: { p50: ms(pct(rs.map((r) => r.tpot), 50)), p99: ms(pct(rs.map((r) => r.tpot), 99)) },
    e2e_ms: { p50: ms(pct(rs.map((r) => r.e2e), 50)), p99: ms(pct(rs.map((r) => r.e2e), 99)) },
  };
}

const prompts = (n, len, vocab, seed) => {
  const r = rng(seed);
  return Array.from({ length: n }, () =>
    Array.from({ length: len }, () => 1 + Math.floor(r() * (vocab - 1))));
};

if (mode === "poisson") {
  const [rate, n, len, maxTokens, vocab, seed] = a.map(Number);
  const ps = prompts(n, len, vocab, seed), r = rng(seed + 1);
  const t0 = performance.now(), pending = [];
  let at = 0;
  for (let i = 0; i < n; i++) {
    const wait = t0 + at * 1000 - performance.now();
    if (wait > 0) await new Promise((ok) => setTimeout(ok, wait));
    pending.push(one(ps[i], maxTokens));
    at += -Math.log(1 - r()) / rate;
  }
  const rs = await Promise.all(pending);
  process.stdout.write(JSON.stringify({ mode, rate, ...summary(rs, (performance.now() - t0) / 1000) }));
} else if (mode === "burst") {
  const [c, len, maxTokens, vocab, seed] = a.map(Number);
  const ps = prompts(c, len, vocab, seed);
  const s0 = await stepSeconds(), t0 = performance.now();
  const rs = await Promise.all(ps.map((p) => one(p, maxTokens)));
  const wall = (performance.now() - t0) / 1000, s1 = await stepSeconds();
  process.stdout.write(JSON.stringify({
    mode, concurrency: c, ...summary(rs, wall), engine_step_s: +(s1 - s0).toFixed(3),
    engine_share: +((s1 - s0) / wall).toFixed(4),
  }));
} else if (mode === "prompts") {
  const [n, len, vocab, seed] = a.map(Number);
  process.stdout.write(prompts(n, len, vocab, seed).map((p) => p.join(",")).join("\n") + "\n");
} else {
  console.error("mode: poisson, burst or prompts");
  process.exit(2);
}
