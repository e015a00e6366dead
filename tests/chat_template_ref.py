"""Renders chat templates with Python's jinja2 the way transformers' apply_chat_template does
(its _compile_jinja_template: ImmutableSandboxedEnvironment with trim_blocks and lstrip_blocks,
the loopcontrols extension, raise_exception, strftime_now and transformers' tojson) and compares
every prompt byte for byte with duet-tokenize --chat. Used by tests/chat_template_ref.sh.

Usage: chat_template_ref.py TOOL CASES NAME=MODEL_DIR[:TEMPLATE_FILE] ...
Each case of CASES (a JSON list) runs on every template unless its "only" names others. A case
that makes jinja2 raise must make duet fail too ("expect_error" says it must raise)."""

import json
import os
import subprocess
import sys
from datetime import datetime

import jinja2
from jinja2.ext import Extension, loopcontrols
from jinja2.sandbox import ImmutableSandboxedEnvironment


class AssistantTracker(Extension):
    """transformers' {% generation %} tag, rendering its body as is."""

    tags = {"generation"}

    def parse(self, parser):
        lineno = next(parser.stream).lineno
        body = parser.parse_statements(["name:endgeneration"], drop_needle=True)
        return jinja2.nodes.CallBlock(self.call_method("_render"), [], [], body).set_lineno(lineno)

    def _render(self, caller):
        return caller()


def compile_template(text):
    def raise_exception(message):
        raise jinja2.exceptions.TemplateError(message)

    def tojson(x, ensure_ascii=False, indent=None, separators=None, sort_keys=False):
        return json.dumps(x, ensure_ascii=ensure_ascii, indent=indent, separators=separators,
                          sort_keys=sort_keys)

    def strftime_now(fmt):
        return datetime.now().strftime(fmt)

    env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True,
                                        extensions=[AssistantTracker, loopcontrols])
    env.filters["tojson"] = tojson
    env.globals["raise_exception"] = raise_exception
    env.globals["strftime_now"] = strftime_now
    return env.from_string(text)


def special_tokens(model_dir):
    with open(f"{model_dir}/tokenizer_config.json", encoding="utf-8") as f:
        cfg = json.load(f)
    out = {}
    for key in ("bos_token", "eos_token", "unk_token", "pad_token"):
        v = cfg.get(key)
        v = v.get("content") if isinstance(v, dict) else v
        if isinstance(v, str):
            out[key] = v
    return out, cfg.get("chat_template")


def reference(template, tokens, case):
    variables = {"messages": case["messages"], "tools": None, "documents": None,
                 "add_generation_prompt": case.get("add_generation_prompt", True), **tokens,
                 **case.get("kwargs", {})}
    try:
        return template.render(**variables), None
    except Exception as e:  # jinja2's TemplateError, and TypeError etc. from the template
        return None, f"{type(e).__name__}: {e}"


def duet(tool, model_dir, template_file, cases):
    """Runs the cases sharing one set of options through one duet-tokenize --jsonl."""
    case = cases[0]
    cmd = [tool, "--chat", "--jsonl", "--model", model_dir]
    if template_file:
        cmd += ["--chat-template", template_file]
    if not case.get("add_generation_prompt", True):
        cmd.append("--no-generation-prompt")
    if case.get("kwargs"):
        cmd += ["--chat-kwargs", json.dumps(case["kwargs"], ensure_ascii=False)]
    stdin = "".join(json.dumps(c["messages"], ensure_ascii=False) + "\n" for c in cases)
    res = subprocess.run(cmd, input=stdin.encode(), capture_output=True, check=False)
    lines = res.stdout.decode().split("\n")[:-1]
    if len(lines) != len(cases):
        sys.exit(f"FAIL: {cmd}: {len(lines)} answers for {len(cases)} cases: {res.stderr!r}")
    return [json.loads(line) for line in lines]


def check_template(tool, name, model_dir, template_file, cases):
    tokens, config_template = special_tokens(model_dir)
    text = config_template
    if template_file:
        with open(template_file, encoding="utf-8") as f:
            text = f.read()
    template = compile_template(text)
    mine = [c for c in cases if name in c.get("only", [name])]
    groups = {}
    for c in mine:
        key = (c.get("add_generation_prompt", True), json.dumps(c.get("kwargs", {})))
        groups.setdefault(key, []).append(c)
    same = errors = failures = 0
    for group in groups.values():
        for case, got in zip(group, duet(tool, model_dir, template_file, group)):
            want, err = reference(template, tokens, case)
            label = f"{name} / {case['name']}"
            if err is not None and "error" in got:
                errors += 1
                if os.environ.get("VERBOSE"):
                    print(f"both failed {label}:\n  jinja2: {err}\n  duet:   {got['error']}")
            elif err is not None:
                failures += 1
                print(f"FAIL {label}: jinja2 raised {err}, duet rendered {got.get('prompt')!r}")
            elif "error" in got:
                failures += 1
                print(f"FAIL {label}: duet failed ({got['error']}), jinja2 rendered {want!r}")
            elif got["prompt"] != want:
                failures += 1
                print(f"FAIL {label}:\n  jinja2: {want!r}\n  duet:   {got['prompt']!r}")
            else:
                same += 1
            if case.get("expect_error") and err is None:
                failures += 1
                print(f"FAIL {label}: expected jinja2 to raise")
    print(f"{name}: {same} prompts identical, {errors} errors on both sides, {failures} failures")
    return failures


def main():
    tool, cases_file = sys.argv[1], sys.argv[2]
    with open(cases_file, encoding="utf-8") as f:
        cases = json.load(f)
    failures = 0
    for spec in sys.argv[3:]:
        name, rest = spec.split("=", 1)
        model_dir, _, template_file = rest.partition(":")
        failures += check_template(tool, name, model_dir, template_file or None, cases)
    sys.exit(1 if failures else 0)


if __name__ == "__main__":
    main()
