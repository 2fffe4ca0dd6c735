"""A stand-in OpenAI-compatible engine for the service tests: a stdlib HTTP
server on 127.0.0.1, port 0, in a daemon thread. What it answers is the
test's: StubEngine(answer) calls answer(ex) for every POST, where ex is an
Exchange (the request's path, headers and JSON body, and the few ways an
engine answers: a whole JSON body, a stream of SSE events, raw bytes).
Every request is recorded in engine.requests before it is answered.

    eng = StubEngine(lambda ex: ex.send_json(200, completion("hi")))
    try:
        ... worker --backend openai --upstream eng.url ...
    finally:
        eng.close()

protocol "HTTP/1.0" ends each body at the close (the server closes every
connection); "HTTP/1.1" keeps connections alive unless the answer closes."""
import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


def chat_chunk(content=None, finish=None, role=None, model="m"):
    """A chat.completion.chunk with one choice whose delta has `role` and
    `content` where given."""
    delta = {}
    if role:
        delta["role"] = role
    if content is not None:
        delta["content"] = content
    return {"id": "x", "object": "chat.completion.chunk", "created": 1, "model": model,
            "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]}


def completion(content, model="m"):
    """A whole chat.completion answering `content`."""
    return {"id": "x", "object": "chat.completion", "created": 1, "model": model,
            "choices": [{"index": 0, "finish_reason": "stop",
                         "message": {"role": "assistant", "content": content}}]}


def sse(obj):
    """One SSE event carrying obj (bytes as they are, else its JSON)."""
    data = obj if isinstance(obj, bytes) else json.dumps(obj).encode()
    return b"data: " + data + b"\n\n"


class Exchange:
    """One POST to the engine: path, headers, body (the parsed JSON) and
    `handler` (the BaseHTTPRequestHandler, for what the helpers do not
    cover: handler.wfile, handler.close_connection)."""

    def __init__(self, handler, body):
        self.handler = handler
        self.path = handler.path
        self.headers = handler.headers
        self.body = body

    def send_body(self, status, content_type, out):
        """A whole answer of bytes `out` with its Content-Length."""
        hd = self.handler
        hd.send_response(status)
        hd.send_header("Content-Type", content_type)
        hd.send_header("Content-Length", str(len(out)))
        hd.end_headers()
        hd.wfile.write(out)

    def send_json(self, status, obj):
        self.send_body(status, "application/json", json.dumps(obj).encode())

    def start_stream(self, headers=()):
        """The head of an SSE answer (status 200), with extra (name, value)
        headers."""
        hd = self.handler
        hd.send_response(200)
        hd.send_header("Content-Type", "text/event-stream")
        for name, value in headers:
            hd.send_header(name, value)
        hd.end_headers()

    def write(self, data, flush=True):
        """Raw bytes of the body; flushed unless told not to."""
        self.handler.wfile.write(data)
        if flush:
            self.handler.wfile.flush()

    def event(self, obj):
        """One SSE event (sse(obj)), flushed."""
        self.write(sse(obj))


class StubEngine:
    def __init__(self, answer, protocol="HTTP/1.1"):
        self.requests = []
        eng = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = protocol

            def log_message(self, *a):
                pass

            def do_POST(self):
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                eng.requests.append({"path": self.path, "headers": dict(self.headers),
                                     "body": body})
                answer(Exchange(self, body))

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/v1"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self):
        self.server.shutdown()
        self.server.server_close()
