#!/usr/bin/env python3
"""Import cycles between the top-level modules of a crate (its folders and
single files): every module is collapsed to its first path segment, and a
cycle among those is reported with the imports that make it.
Usage: python3 scripts/folder_cycles.py relay/src [-v] [--allow a,b]
  -v: every edge; --allow a,b: a known cycle of exactly these folders is
  tolerated (it is still printed).
Exit status 1 if there is a cycle that is not allowed."""
import os, re, sys
args = sys.argv[1:]
allowed = set()
if "--allow" in args:
    i = args.index("--allow")
    allowed = set(args[i + 1].split(","))
    del args[i:i + 2]
roots = [a for a in args if not a.startswith("-")]
root = roots[0] if roots else "relay/src"
mods = {}
for dp, _, fs in os.walk(root):
    for f in fs:
        if not f.endswith(".rs") or (dp == root and f in ("main.rs", "lib.rs")): continue
        p = os.path.join(dp, f); rel = os.path.relpath(p, root)[:-3]
        parts = rel.split(os.sep)
        if parts[-1] == "mod": parts = parts[:-1]
        # Only code imports: comments (doc links among them) are not edges.
        mods["::".join(parts)] = re.sub(r"//[^\n]*", "", open(p).read())
tops = {m.split("::")[0] for m in mods}
edges = {t: {} for t in tops}  # folder -> {folder: [module that imports]}
for m, src in mods.items():
    a = m.split("::")[0]
    found = set(re.findall(r"crate::([a-z_][a-z0-9_]*)", src))
    for g in re.finditer(r"crate::\{([^}]*)\}", src, re.S):
        found |= {i.strip().split("::")[0] for i in g.group(1).split(",") if i.strip()}
    for b in found:
        if b in tops and b != a: edges[a].setdefault(b, []).append(m)
idx, low, st, on, out, c = {}, {}, [], set(), [], [0]
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
        out.append(sorted(comp))
for v in sorted(tops):
    if v not in idx: sc(v)
cyc = [x for x in out if len(x) > 1]
print(f"top-level modules: {len(tops)}; in import cycles: {sum(map(len, cyc))}; cycles: {len(cyc)}")
for x in sorted(cyc, key=len, reverse=True):
    print(f"  {len(x)}: {' '.join(x)}")
    for a in x:
        for b in sorted(set(edges[a]) & set(x)):
            print(f"    {a} -> {b}  ({', '.join(sorted(edges[a][b]))})")
if "-v" in args:
    for a in sorted(edges):
        print(f"  {a} -> {' '.join(sorted(edges[a]))}")
bad = [x for x in cyc if set(x) != allowed]
if bad:
    print(f"{root}: folders import one another in a circle: {'; '.join(' '.join(x) for x in bad)}")
sys.exit(1 if bad else 0)
