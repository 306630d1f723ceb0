"""A tiny, deliberately misbehaving stdio MCP server for the bridge's tests.

Standard library only; one JSON-RPC message per line. Tools:
  echo{text}     answers with the text (and notes this process's pid)
  garbage        writes a non-JSON line and a response with an id nobody
                 sent before its real answer
  progress       sends two progress notifications and a log message, then answers
  huge           writes one line over 16 MiB
  exit{code}     exits at once with that status, without answering
  junk{count}    writes that many lines that are not JSON, then answers
  later          answers, then (a moment later) sends a log message that
                 belongs to no request
Every request also logs one line on stderr.
With --linger it does not exit when its stdin closes, and ignores SIGTERM
(a server that would outlive a careless parent).
"""

import json
import os
import signal
import sys
import time


def send(msg):
    sys.stdout.write(json.dumps(msg) + "\n")
    sys.stdout.flush()


def result(id, text):
    send({"jsonrpc": "2.0", "id": id, "result": {"content": [{"type": "text", "text": text}], "isError": False}})


TOOLS = [
    {"name": n, "description": n, "inputSchema": {"type": "object"}}
    for n in ("echo", "garbage", "progress", "huge", "exit", "later", "junk")
]

for line in sys.stdin:
    msg = json.loads(line)
    method, id = msg.get("method"), msg.get("id")
    print(f"stdio_server got {method}", file=sys.stderr, flush=True)
    if id is None:
        continue
    if method == "initialize":
        send({"jsonrpc": "2.0", "id": id, "result": {
            "protocolVersion": msg["params"]["protocolVersion"],
            "capabilities": {"tools": {}, "logging": {}},
            "serverInfo": {"name": "misbehaving", "version": "1"},
        }})
    elif method == "tools/list":
        send({"jsonrpc": "2.0", "id": id, "result": {"tools": TOOLS}})
    elif method == "tools/call":
        name = msg["params"]["name"]
        args = msg["params"].get("arguments") or {}
        if name == "echo":
            result(id, f"{args.get('text', '')} pid={os.getpid()}")
        elif name == "garbage":
            sys.stdout.write("this is not JSON\n")
            send({"jsonrpc": "2.0", "id": 987654321, "result": {"stolen": True}})
            send({"jsonrpc": "2.0", "id": "someone-else", "result": {"stolen": True}})
            result(id, "after garbage")
        elif name == "progress":
            token = msg["params"].get("_meta", {}).get("progressToken")
            for i in (1, 2):
                send({"jsonrpc": "2.0", "method": "notifications/progress",
                      "params": {"progressToken": token, "progress": i, "total": 2}})
            send({"jsonrpc": "2.0", "method": "notifications/message",
                  "params": {"level": "info", "data": "working"}})
            result(id, "done")
        elif name == "huge":
            sys.stdout.write('{"jsonrpc":"2.0","id":%s,"result":{"x":"' % json.dumps(id))
            sys.stdout.write("x" * (17 * 1024 * 1024))
            sys.stdout.write('"}}\n')
            sys.stdout.flush()
        elif name == "later":
            result(id, "see you later")
            time.sleep(0.5)
            send({"jsonrpc": "2.0", "method": "notifications/message",
                  "params": {"level": "info", "data": "later-news"}})
        elif name == "junk":
            for i in range(int(args.get("count", 1000))):
                sys.stdout.write(f"junk line {i}: not JSON-RPC\n")
            sys.stdout.flush()
            result(id, "after junk")
        elif name == "exit":
            sys.exit(int(args.get("code", 3)))
    elif method == "ping":
        send({"jsonrpc": "2.0", "id": id, "result": {}})
    else:
        send({"jsonrpc": "2.0", "id": id, "error": {"code": -32601, "message": f"no method {method}"}})

if "--linger" in sys.argv[1:]:
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    try:
        print("stdio_server: stdin closed, lingering", file=sys.stderr, flush=True)
    except BrokenPipeError:
        pass
    # Nothing more is written: a closed stdout or stderr must not end it.
    os.close(1)
    os.close(2)
    while True:
        time.sleep(3600)
