#!/usr/bin/env python3
"""The longest functions (in lines) and files of a source folder.
Usage: python3 scripts/largest_fns.py relay/src [N]"""
import os, re, sys
root = sys.argv[1] if len(sys.argv) > 1 else "relay/src"
n = int(sys.argv[2]) if len(sys.argv) > 2 else 3
fns, files = [], []
for dp, _, fs in os.walk(root):
    for f in fs:
        if not f.endswith(".rs"):
            continue
        p = os.path.join(dp, f)
        lines = open(p).read().split("\n")
        files.append((len(lines) - 1, os.path.relpath(p, root)))
        for i, l in enumerate(lines):
            m = re.match(r"\s*(pub(\([^)]*\))?\s+)?(async\s+)?fn\s+(\w+)", l)
            if not m:
                continue
            # The body runs from the first `{` to the line where braces balance.
            depth, started = 0, False
            for j in range(i, len(lines)):
                code = re.sub(r'"(\\.|[^"\\])*"|//.*', "", lines[j])
                depth += code.count("{") - code.count("}")
                started = started or "{" in code
                if started and depth <= 0:
                    break
                if not started and code.rstrip().endswith(";"):
                    break
            if started:
                fns.append((j - i + 1, f"{os.path.relpath(p, root)}:{i + 1} {m.group(4)}"))
for title, items in (("functions", fns), ("files", files)):
    print(f"longest {title}:")
    for length, name in sorted(items, reverse=True)[:n]:
        print(f"  {length:5} {name}")
