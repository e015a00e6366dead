// prom_check.mjs FILE: reads FILE as Prometheus text exposition (format 0.0.4) strictly and
// prints its samples as JSON, {"name{label=\"v\",...}": value}, labels in the file's order.
// Exits 1 naming the line at fault when: a line matches none of HELP / TYPE / sample; a family
// lacks HELP or TYPE before its samples, or its samples are not together; a sample repeats; a
// counter's sample does not end in _total; a histogram has other samples than _bucket, _sum and
// _count, buckets out of order, counts that are not cumulative, or a +Inf bucket that differs
// from _count; a sample lacks model_name. Used by tests/server_check.sh and tests/server_load.sh.
import { readFileSync } from "node:fs";

const NAME = "[a-zA-Z_:][a-zA-Z0-9_:]*";
const LABEL = '[a-zA-Z_][a-zA-Z0-9_]*="(?:[^"\\\\\\n]|\\\\[\\\\"n])*"';
const VALUE = "(?:[-+]?(?:[0-9]+(?:\\.[0-9]*)?|\\.[0-9]+)(?:[eE][-+]?[0-9]+)?|[-+]Inf|NaN)";
const HELP = new RegExp(`^# HELP (${NAME}) (.*)$`);
const TYPE = new RegExp(`^# TYPE (${NAME}) (counter|gauge|histogram)$`);
const SAMPLE = new RegExp(`^(${NAME})(?:\\{(${LABEL}(?:,${LABEL})*)\\})? (${VALUE})$`);

const text = readFileSync(process.argv[2], "utf8");
const die = (n, why) => {
  console.error(`${process.argv[2]}:${n}: ${why}`);
  process.exit(1);
};
if (!text.endsWith("\n")) die(0, "the text does not end with a newline");

const help = new Map(), type = new Map(), done = new Set(), out = {};
const hist = new Map(); // family -> {buckets: [[le, count]], count, sum} per label set
let current = null;

const familyOf = (name) => {
  for (const [fam, t] of type) {
    if (t === "counter" && name === fam + "_total") return fam;
    if (t === "histogram" && ["_bucket", "_sum", "_count"].some((s) => name === fam + s)) return fam;
    if (t === "gauge" && name === fam) return fam;
  }
  return null;
};

text.slice(0, -1).split("\n").forEach((line, i) => {
  const n = i + 1;
  let m;
  if ((m = HELP.exec(line))) {
    if (help.has(m[1])) die(n, `second HELP for ${m[1]}`);
    help.set(m[1], m[2]);
  } else if ((m = TYPE.exec(line))) {
    if (type.has(m[1])) die(n, `second TYPE for ${m[1]}`);
    if (!help.has(m[1])) die(n, `TYPE before HELP for ${m[1]}`);
    type.set(m[1], m[2]);
  } else if ((m = SAMPLE.exec(line))) {
    const fam = familyOf(m[1]);
    if (!fam) die(n, `sample ${m[1]} belongs to no declared family (counters end in _total)`);
    if (fam !== current) {
      if (done.has(fam)) die(n, `samples of ${fam} are not together`);
      if (current) done.add(current);
      current = fam;
    }
    const labels = m[2] ? m[2].match(new RegExp(LABEL, "g")) : [];
    if (!labels.some((l) => l.startsWith("model_name="))) die(n, `${m[1]} has no model_name`);
    const key = `${m[1]}{${labels.join(",")}}`;
    if (key in out) die(n, `repeated sample ${key}`);
    const v = Number(m[3].replace("Inf", "Infinity"));
    out[key] = v;
    if (type.get(fam) === "counter" && !(v >= 0)) die(n, `counter ${key} is ${m[3]}`);
    if (type.get(fam) !== "histogram") return;
    const rest = labels.filter((l) => !l.startsWith("le=")).join(",");
    const h = hist.get(`${fam}{${rest}}`) ?? { buckets: [], count: null, sum: null, n };
    hist.set(`${fam}{${rest}}`, h);
    if (m[1] === fam + "_bucket") {
      const le = labels.find((l) => l.startsWith("le="));
      if (!le) die(n, `${key} has no le`);
      const bound = Number(le.slice(4, -1).replace("+Inf", "Infinity"));
      if (Number.isNaN(bound)) die(n, `${key}: le is not a number`);
      const last = h.buckets[h.buckets.length - 1];
      if (last && !(bound > last[0])) die(n, `${key}: le not increasing`);
      if (last && v < last[1]) die(n, `${key}: buckets not cumulative (${v} < ${last[1]})`);
      if (h.count !== null || h.sum !== null) die(n, `${key}: bucket after _count or _sum`);
      h.buckets.push([bound, v]);
    } else if (m[1] === fam + "_count") h.count = v;
    else h.sum = v;
  } else {
    die(n, `not Prometheus text: ${JSON.stringify(line)}`);
  }
});
for (const [k, h] of hist) {
  const last = h.buckets[h.buckets.length - 1];
  if (!last || last[0] !== Infinity) die(h.n, `${k}: no +Inf bucket`);
  if (h.count === null || h.sum === null) die(h.n, `${k}: no _count or _sum`);
  if (last[1] !== h.count) die(h.n, `${k}: +Inf bucket ${last[1]} != _count ${h.count}`);
  if (h.count === 0 ? h.sum !== 0 : !(h.sum >= 0)) die(h.n, `${k}: _sum ${h.sum}`);
}
for (const fam of type.keys())
  if (!done.has(fam) && fam !== current) die(0, `family ${fam} has no samples`);
process.stdout.write(JSON.stringify(out));
