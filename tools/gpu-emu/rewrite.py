#!/usr/bin/env python3
"""Rewrite CUDA sources for the host emulation (make check-gpu-emu, emu_rt.cc):
usage: rewrite.py in.cu out.cc; k<<<cfg>>>(args) -> emu_launch(...),
extern __shared__ T x[]; -> T *x = (T *)emu_dyn_smem();"""
import re, sys
src = open(sys.argv[1]).read()
src = re.sub(r'extern\s+__shared__\s+(\w+)\s+(\w+)\s*\[\s*\]\s*;', r'\1 *\2 = (\1 *)emu_dyn_smem();', src)
out, i = [], 0
while True:
    j = src.find('<<<', i)
    if j < 0:
        out.append(src[i:]); break
    # kernel expression before <<<: identifier, optional <template args>
    m = re.search(r'([A-Za-z_]\w*(?:\s*<[^<>;]*>)?)\s*$', src[i:j])
    kstart = i + m.start(1); kern = m.group(1)
    k = src.find('>>>', j)
    cfg = src[j + 3:k]
    p = k + 3
    while src[p] in ' \t\\\n': p += 1
    assert src[p] == '(', src[j-40:p+10]
    depth, q = 0, p
    while True:
        c = src[q]
        if c == '(': depth += 1
        elif c == ')':
            depth -= 1
            if depth == 0: break
        q += 1
    args = src[p + 1:q]
    out.append(src[i:kstart])
    name = re.sub(r'\s+', '', kern)
    out.append('emu_launch_k(&%s, "%s", emu_mkcfg(%s), %s)' % (kern, name, cfg, args))
    i = q + 1
open(sys.argv[2], 'w').write(''.join(out))
