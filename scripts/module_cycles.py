#!/usr/bin/env python3
"""Count relay modules that sit in an import cycle (strongly connected components > 1).
Usage: python3 scripts/module_cycles.py relay/src [-v]  (-v: the edges inside each cycle)"""
import os, re, sys
root = sys.argv[1] if len(sys.argv) > 1 else "relay/src"
mods = {}
for dp, _, fs in os.walk(root):
    for f in fs:
        if not f.endswith(".rs") or (dp == root and f == "main.rs"): continue
        p = os.path.join(dp, f); rel = os.path.relpath(p, root)[:-3]
        parts = rel.split(os.sep)
        if parts[-1] in ("mod", "lib", "main"): parts = parts[:-1]
        name = "::".join(parts) or "crate"
        # Only code imports: comments (doc links among them) are not edges.
        mods[name] = re.sub(r"//[^\n]*", "", open(p).read())
names = set(mods)
def resolve(path):
    segs = path.split("::")
    for i in range(len(segs), 0, -1):
        c = "::".join(segs[:i])
        if c in names: return c
    return None
edges = {m: set() for m in mods}
for m, src in mods.items():
    # `crate::a::b` anywhere, incl. inside use groups `crate::{a, b::c}`
    for mm in re.finditer(r"crate::\{([^}]*)\}", src, re.S):
        for item in mm.group(1).split(","):
            item = item.strip().split(" as ")[0]
            if item:
                t = resolve(re.sub(r"::\{.*", "", item.replace("\n", "")))
                if t and t != m: edges[m].add(t)
    for mm in re.finditer(r"crate::([a-z_][a-z0-9_]*(?:::[a-z_][a-z0-9_]*)*)", src):
        t = resolve(mm.group(1))
        if t and t != m: edges[m].add(t)
# Tarjan
idx, low, st, on, out, c = {}, {}, [], set(), [], [0]
sys.setrecursionlimit(10000)
def sc(v):
    idx[v] = low[v] = c[0]; c[0] += 1; st.append(v); on.add(v)
    for w in edges[v]:
        if w not in idx: sc(w); low[v] = min(low[v], low[w])
        elif w in on: low[v] = min(low[v], idx[w])
    if low[v] == idx[v]:
        comp = []
        while True:
            w = st.pop(); on.discard(w); comp.append(w)
            if w == v: break
        out.append(comp)
for v in sorted(mods):
    if v not in idx: sc(v)
cyc = [sorted(x) for x in out if len(x) > 1]
print(f"modules: {len(mods)}; in import cycles: {sum(map(len, cyc))}; cycles (SCCs): {len(cyc)}")
for x in sorted(cyc, key=len, reverse=True): print(f"  {len(x)}: {' '.join(x)}")
if "-v" in sys.argv:
    for x in cyc:
        s = set(x)
        for m in sorted(x):
            print(f"    {m} -> {' '.join(sorted(edges[m] & s))}")
