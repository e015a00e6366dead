// The reference side of tests/tokenizer_ref.sh, on Hugging Face's JavaScript tokenizers
// (@huggingface/tokenizers).
//
//   node tokenizer_ref.mjs gen DIR CORPUS OUT     writes OUT/ref_ids.jsonl, ref_ids_nospecial.jsonl
//                                                (one id array per corpus line), ref_text.jsonl and
//                                                ref_text_skip.jsonl (their decode, keeping and
//                                                skipping special tokens)
//   node tokenizer_ref.mjs gpt2 DIR - OUT         writes OUT/tokenizer.json: DIR's with GPT-2's
//                                                pre-tokenizer (ByteLevel, add_prefix_space and
//                                                its own regex) and no ignore_merges, and copies
//                                                tokenizer_config.json
//   node tokenizer_ref.mjs normalized DIR - OUT   writes OUT/tokenizer.json: DIR's with every added
//                                                token "normalized": true (as Llama 2's original
//                                                tokenizer.json has them)
//   node tokenizer_ref.mjs compare NAME CORPUS OUT   compares duet_*.jsonl with ref_*.jsonl line
//                                                by line, prints every mismatch with its line and
//                                                a summary, and exits 1 when any line differs
//
// Decoding is compared without transformers' clean_up_tokenization_spaces (duet does not apply
// it: docs/tokenizer.md).
import fs from "node:fs";
import path from "node:path";
import { Tokenizer } from "@huggingface/tokenizers";

const [mode, a, corpusPath, out] = process.argv.slice(2);
const corpus = mode === "gpt2" || mode === "normalized" ? [] : fs.readFileSync(corpusPath, "utf8").split("\n")
    .filter((l) => l.length > 0).map((l) => JSON.parse(l));
const readJsonl = (f) => fs.readFileSync(path.join(out, f), "utf8").split("\n")
    .filter((l) => l.length > 0).map((l) => JSON.parse(l));
const writeJsonl = (f, rows) =>
    fs.writeFileSync(path.join(out, f), rows.map((r) => JSON.stringify(r)).join("\n") + "\n");

function gen(dir) {
    const json = JSON.parse(fs.readFileSync(path.join(dir, "tokenizer.json"), "utf8"));
    const config = JSON.parse(fs.readFileSync(path.join(dir, "tokenizer_config.json"), "utf8"));
    const tok = new Tokenizer(json, config);
    const ids = corpus.map((t) => tok.encode(t).ids);
    const idsNo = corpus.map((t) => tok.encode(t, { add_special_tokens: false }).ids);
    const dec = (x, skip) => x.length === 0 ? "" :
        tok.decode(x, { skip_special_tokens: skip, clean_up_tokenization_spaces: false });
    writeJsonl("ref_ids.jsonl", ids);
    writeJsonl("ref_ids_nospecial.jsonl", idsNo);
    writeJsonl("ref_text.jsonl", ids.map((x) => ({ text: dec(x, false) })));
    writeJsonl("ref_text_skip.jsonl", ids.map((x) => ({ text: dec(x, true) })));
}

function compare(name) {
    const pairs = [["ids", "ref_ids.jsonl", "duet_ids.jsonl", (r) => r, (d) => d.ids],
        ["ids --no-special", "ref_ids_nospecial.jsonl", "duet_ids_nospecial.jsonl", (r) => r,
            (d) => d.ids],
        ["decode", "ref_text.jsonl", "duet_text.jsonl", (r) => r.text, (d) => d.text],
        ["decode --skip-special", "ref_text_skip.jsonl", "duet_text_skip.jsonl", (r) => r.text,
            (d) => d.text]];
    let bad = 0;
    for (const [what, refFile, duetFile, refOf, duetOf] of pairs) {
        const ref = readJsonl(refFile), duet = readJsonl(duetFile);
        let same = 0;
        for (let i = 0; i < corpus.length; i++) {
            const r = JSON.stringify(refOf(ref[i])), d = JSON.stringify(duet[i] && duetOf(duet[i]));
            if (r === d) {
                same++;
                continue;
            }
            console.log(`${name} ${what}: line ${i + 1} ${JSON.stringify(corpus[i]).slice(0, 80)}`);
            console.log(`  reference ${r.slice(0, 400)}`);
            console.log(`  duet      ${(d ?? "(no answer)").slice(0, 400)}`);
        }
        console.log(`${name} ${what}: ${same}/${corpus.length} lines identical`);
        bad += corpus.length - same;
    }
    process.exit(bad ? 1 : 0);
}

function derive(dir, change) {
    const json = JSON.parse(fs.readFileSync(path.join(dir, "tokenizer.json"), "utf8"));
    change(json);
    fs.mkdirSync(out, { recursive: true });
    fs.writeFileSync(path.join(out, "tokenizer.json"), JSON.stringify(json));
    fs.copyFileSync(path.join(dir, "tokenizer_config.json"), path.join(out, "tokenizer_config.json"));
}

function gpt2(json) {
    json.pre_tokenizer = { type: "ByteLevel", add_prefix_space: true, trim_offsets: true,
        use_regex: true };
    json.model.ignore_merges = false;
}

if (mode === "gen") gen(a);
else if (mode === "gpt2") derive(a, gpt2);
else if (mode === "normalized") derive(a, (json) => json.added_tokens.forEach((t) => {
    t.normalized = true;
}));
else compare(a);
