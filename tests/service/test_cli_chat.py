"""`roster model chat`: a streamed conversation from a pipe through the
controllers and a real builtin worker; the conversation each request
carries (checked by a small OpenAI-compatible SSE server that records what
it gets), --system, --temperature, --max_tokens, --api_base with --api_key,
/clear and /exit; every way a reply can fail; the choice of a routable
instance; and, through a pseudo-terminal, Ctrl-C stopping one reply while
the conversation goes on, and Ctrl-C or Ctrl-D leaving at the prompt.
"""
import os
import pty
import select
import shlex
import signal
import subprocess
import sys
import threading
import time

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "lib"))
import harness as h  # noqa: E402
from stub_engine import StubEngine, chat_chunk, completion  # noqa: E402


class RecordingEngine(StubEngine):
    """An OpenAI-compatible chat server that records every request and
    answers according to the last user message: by default a streamed
    "reply N: <message>" in three chunks; 'slow' streams "tick " every 50 ms
    until the client goes away (self.gone is set then); 'boom' sends a chunk
    and then an error event; 'http500' answers 500 with an OpenAI error;
    'cut' sends a chunk and closes without finishing; 'json' answers with a
    whole chat.completion instead of a stream."""

    def __init__(self):
        self.gone = threading.Event()
        super().__init__(self.answer)

    def answer(self, ex):
        n = len(self.requests)
        msg = ex.body["messages"][-1]["content"]
        if msg == "http500":
            ex.send_json(500, {"error": {"message": "the engine is on fire",
                                         "type": "server_error", "param": None,
                                         "code": "fire"}})
            return
        if msg == "json":
            ex.send_json(200, completion(f"whole {n}"))
            return
        ex.start_stream([("Connection", "close")])
        ex.handler.close_connection = True
        ex.event(chat_chunk(role="assistant", content=""))
        if msg == "slow":
            try:
                for _ in range(600):
                    ex.event(chat_chunk("tick "))
                    time.sleep(0.05)
            except (BrokenPipeError, ConnectionResetError):
                self.gone.set()
            return
        if msg in ("boom", "cut"):
            ex.event(chat_chunk("partial "))
            if msg == "boom":
                ex.event({"error": {"message": "the engine broke", "type": "server_error",
                                    "param": None, "code": "upstream_error"}})
            return
        text = f"reply {n}: {msg}"
        for piece in (text[:4], text[4:9], text[9:]):
            ex.event(chat_chunk(piece))
        ex.event(chat_chunk(finish="stop"))
        ex.event(b"[DONE]")

    def messages(self, i):
        return self.requests[i]["body"]["messages"]


# ROSTER_TEST_WRAPPER (valgrind, ...) runs the chat command too
WRAPPER = shlex.split(os.environ.get("ROSTER_TEST_WRAPPER", ""))
SLOW = 4 if WRAPPER else 1


def chat(args, stdin, env=None, timeout=30):
    """`roster model chat <args>` with `stdin` piped in; the CompletedProcess."""
    r = subprocess.run(WRAPPER + [h.BIN, "model", "chat"] + list(args), input=stdin,
                       capture_output=True, text=True, timeout=timeout * SLOW,
                       env=h.clean_env(env))
    if h.sanitizer_report(r.stdout + r.stderr):
        raise h.Failure(f"sanitizer report:\n{r.stderr[-6000:]}")
    return r


def user(text):
    return {"role": "user", "content": text}


def assistant(text):
    return {"role": "assistant", "content": text}


def test_chat_streams_a_reply_from_a_pipe(t):
    c = t.controller()
    w = t.start("wrk", ["start", "worker", "--model_name", "tiny", "--worker_type", "llm",
                        "--host", "127.0.0.1", "--controller_addr", c.url,
                        "--decode_delay_ms", "5"])
    h.wait_until(lambda: h.list_models(c.url, "tiny@llm", healthy_only="true"), 5,
                 what="the worker routable")
    body = {"model": "tiny", "messages": [user("What is roster?")], "temperature": 0,
            "max_tokens": 12}
    want = h.request("POST", w.url + "/v1/chat/completions", body).json()
    want = want["choices"][0]["message"]["content"]
    h.check(want, "the worker answers")
    for name in (["--model_name", "tiny"], ["-m", "tiny@llm"]):
        r = chat(name + ["--temperature", "0", "--max_tokens", "12"], "What is roster?\n",
                 env={"CONTROLLER_ADDRESS": c.url})
        h.eq((r.returncode, r.stderr), (0, ""), f"{name}:")
        h.eq(r.stdout, want + "\n", f"the reply streamed through the controllers ({name}):")
    # two turns: the second request carries the first exchange (the builtin
    # model then continues the whole conversation)
    msgs = [user("What is roster?"), assistant(want), user("And the worker?")]
    want2 = h.request("POST", w.url + "/v1/chat/completions",
                      dict(body, messages=msgs)).json()["choices"][0]["message"]["content"]
    r = chat(["-m", "tiny", "--controller_addr", c.url, "--temperature", "0", "--max_tokens",
              "12"], "What is roster?\n\n   \nAnd the worker?\n")
    h.eq((r.returncode, r.stdout), (0, want + "\n" + want2 + "\n"), "two turns, blanks skipped:")
    # the worker stopped: nothing routable, said at once
    ok = h.cli(["model", "stop", "--model_name", "tiny", "--controller_addr", c.url])
    h.eq(ok.returncode, 0, ok.stderr)
    h.wait_until(lambda: not h.list_models(c.url, "tiny@llm", healthy_only="true"), 5,
                 what="tiny out of the routable set")
    r = chat(["-m", "tiny", "--controller_addr", c.url], "hello\n")
    h.eq((r.returncode, r.stdout), (69, ""))
    h.check("no instance of tiny@llm is routable (1 registered" in r.stderr, r.stderr)
    r = chat(["-m", "nosuch", "--controller_addr", c.url], "hello\n")
    h.check(r.returncode == 69 and "no instance of nosuch@llm is registered" in r.stderr,
            r.stderr)


def test_chat_history_and_options(t):
    e = RecordingEngine()
    try:
        lines = "first\nsecond\n /CLEAR \nthird\n/reset\nfourth\n/exit\nignored\n"
        r = chat(["--model_name", "tiny", "--api_base", e.url + "/", "--system", "Be brief.",
                  "--temperature", "0.5", "--max_tokens", "7"], lines,
                 env={"ROSTER_API_KEY": "sk-chat-key"})
        h.eq((r.returncode, r.stderr), (0, ""))
        h.eq(r.stdout, "reply 1: first\nreply 2: second\nreply 3: third\nreply 4: fourth\n")
        h.eq(len(e.requests), 4, "no request after /exit:")
        sys_msg = {"role": "system", "content": "Be brief."}
        h.eq(e.messages(0), [sys_msg, user("first")])
        h.eq(e.messages(1), [sys_msg, user("first"), assistant("reply 1: first"), user("second")],
             "the second request carries the first exchange:")
        h.eq(e.messages(2), [sys_msg, user("third")], "/clear starts over, the system prompt kept:")
        h.eq(e.messages(3), [sys_msg, user("fourth")], "/reset too:")
        for q in e.requests:
            h.eq(q["path"], "/v1/chat/completions")
            h.eq(q["headers"].get("Authorization"), "Bearer sk-chat-key")
            b = q["body"]
            h.eq((b["model"], b["stream"], b["temperature"], b["max_tokens"]),
                 ("tiny", True, 0.5, 7))
        # without --system, --temperature, --max_tokens, --api_key: none sent
        n = len(e.requests)
        r = chat(["-m", "tiny", "--api_base", e.url], "solo\n")
        h.eq((r.returncode, r.stdout), (0, f"reply {n + 1}: solo\n"))
        q = e.requests[-1]
        h.eq(sorted(q["body"]), ["messages", "model", "stream"])
        h.eq(q["body"]["messages"], [user("solo")])
        h.check("Authorization" not in q["headers"], "no key, no Authorization header")
        # --api_key on the command line works, with a warning
        r = chat(["-m", "tiny", "--api_base", e.url, "--api_key", "sk-argv"], "x\n")
        h.eq(e.requests[-1]["headers"].get("Authorization"), "Bearer sk-argv")
        h.check("--api_key on the command line" in r.stderr, r.stderr)
    finally:
        e.close()


def test_chat_failures(t):
    e = RecordingEngine()
    try:
        lines = "boom\nhello\nhttp500\ncut\njson\nafter\n"
        r = chat(["-m", "tiny", "--api_base", e.url], lines)
        h.eq(r.returncode, 69, "a failed turn makes the exit status 69:")
        errs = r.stderr.splitlines()
        h.eq(len(errs), 3, f"one line per failed turn: {r.stderr}")
        h.check("mid-stream: the engine broke" in errs[0], errs[0])
        h.check(f"{e.url}/chat/completions answered HTTP 500: the engine is on fire" in errs[1],
                errs[1])
        h.check("the stream ended before the reply was complete" in errs[2], errs[2])
        h.eq(r.stdout, "partial \nreply 2: hello\npartial \nwhole 5\nreply 6: after\n")
        # a failed turn is forgotten: the requests after it do not carry it
        h.eq(e.messages(1), [user("hello")])
        h.eq(e.messages(4), [user("hello"), assistant("reply 2: hello"), user("json")])
        h.eq(e.messages(5), [user("hello"), assistant("reply 2: hello"), user("json"),
                             assistant("whole 5"), user("after")])
    finally:
        e.close()
    # nothing listens at --api_base
    dead_sock, dead = h.dead_port()
    try:
        r = chat(["-m", "tiny", "--api_base", f"http://127.0.0.1:{dead}/v1"], "hi\n")
        h.eq((r.returncode, r.stdout), (69, ""))
        h.check(f"cannot reach http://127.0.0.1:{dead}/v1/chat/completions" in r.stderr, r.stderr)
    finally:
        dead_sock.close()
    # bad usage
    for args, needle in [([], "needs --model_name"), (["-m", "emb@text2vec"], "not a text2vec"),
                         (["-m", "x", "--temperature", "3"], "--temperature"),
                         (["-m", "x", "--json"], "unknown option --json")]:
        r = chat(args, "")
        h.check(r.returncode == 64 and needle in r.stderr, f"{args}: {r.stderr!r}")
    # no controller answers
    r = chat(["-m", "tiny", "--controller_addr", f"http://127.0.0.1:{dead}"], "hi\n")
    h.check(r.returncode == 69 and "no controller answered" in r.stderr, r.stderr)


def test_chat_picks_a_routable_instance(t):
    c = t.controller()
    w = t.start("wrk", ["start", "worker", "--model_name", "tiny", "--worker_type", "llm",
                        "--host", "127.0.0.1", "--controller_addr", c.url])
    h.wait_until(lambda: h.list_models(c.url, "tiny@llm", healthy_only="true"), 5,
                 what="the worker routable")
    # a heavier instance that refuses connections: picked first, then left
    dead_sock, dead = h.dead_port()
    try:
        h.register(c.url, model="tiny@llm", port=dead, weight=1000000, check_healthy=False)
        r = chat(["-m", "tiny", "--controller_addr", c.url, "--max_tokens", "3"], "hi\nhi\n")
        h.eq(r.returncode, 0, r.stderr)
        h.check(r.stdout.strip(), "replies")
        h.eq(h.metric(w.url, "roster_worker_requests_total"), 2.0, "both turns answered by "
             "the worker:")
        h.check(f"cannot reach http://127.0.0.1:{dead}/v1/chat/completions" in r.stderr
                and "trying another instance" in r.stderr, r.stderr)
        # drained (weight 0) or disabled instances are not routable, so never asked
        for change in ({"weight": 0}, {"enabled": False}):
            body = dict({"model_name": "tiny@llm", "host": "127.0.0.1", "port": dead}, **change)
            h.eq(h.admin(c.url, body).status, 200)
            before = h.metric(w.url, "roster_worker_requests_total")
            r = chat(["-m", "tiny", "--controller_addr", c.url, "--max_tokens", "3"], "hi\n")
            h.eq((r.returncode, r.stderr), (0, ""), f"{change}:")
            h.eq(h.metric(w.url, "roster_worker_requests_total"), before + 1)
            h.eq(h.admin(c.url, {"model_name": "tiny@llm", "host": "127.0.0.1", "port": dead,
                                 "weight": None, "enabled": True}).status, 200)
    finally:
        dead_sock.close()
    h.check(w.alive(), "the worker is fine")


# ---- a terminal ------------------------------------------------------------------------

class Terminal:
    """`roster model chat` on a pseudo-terminal (its controlling terminal, so
    Ctrl-C there is SIGINT to it, as in a shell)."""

    def __init__(self, args, env=None):
        pid, fd = pty.fork()
        if pid == 0:  # the child: nothing but exec
            try:
                argv = WRAPPER + [h.BIN, "model", "chat"] + list(args)
                os.execvpe(argv[0], argv, h.clean_env(env))
            finally:
                os._exit(127)
        self.pid, self.fd = pid, fd
        self.out = b""
        self.status = None

    def read_until(self, needle, timeout=10.0, start=0):
        """Reads until `needle` appears after offset `start`; returns its end."""
        deadline = time.monotonic() + timeout * SLOW
        while True:
            i = self.out.find(needle, start)
            if i >= 0:
                return i + len(needle)
            left = deadline - time.monotonic()
            if left <= 0:
                raise h.Failure(f"timed out waiting for {needle!r}; the terminal shows:\n"
                                f"{self.out.decode(errors='replace')[-2000:]}")
            r, _, _ = select.select([self.fd], [], [], min(left, 0.2))
            if r:
                try:
                    data = os.read(self.fd, 65536)
                except OSError:  # the child is gone (EIO)
                    data = b""
                if not data:
                    raise h.Failure(f"the terminal closed before {needle!r}:\n"
                                    f"{self.out.decode(errors='replace')[-2000:]}")
                self.out += data

    def write(self, data):
        os.write(self.fd, data)

    def wait(self, timeout=10.0):
        deadline = time.monotonic() + timeout * SLOW
        while time.monotonic() < deadline:
            try:
                r, _, _ = select.select([self.fd], [], [], 0.1)
                if r:
                    self.out += os.read(self.fd, 65536)
            except OSError:
                pass
            pid, status = os.waitpid(self.pid, os.WNOHANG)
            if pid:
                self.status = status
                return os.waitstatus_to_exitcode(status)
        raise h.Failure(f"the chat did not exit within {timeout}s:\n"
                        f"{self.out.decode(errors='replace')[-2000:]}")

    def close(self):
        if self.status is None:
            try:
                os.kill(self.pid, signal.SIGKILL)
                os.waitpid(self.pid, 0)
            except OSError:
                pass
        os.close(self.fd)
        if h.sanitizer_report(self.out.decode(errors="replace")):
            raise h.Failure(f"sanitizer report:\n{self.out.decode(errors='replace')[-6000:]}")


def test_ctrl_c_stops_a_reply_only(t):
    e = RecordingEngine()
    term = Terminal(["-m", "tiny", "--api_base", e.url])
    try:
        at = term.read_until(b"You: ")
        term.write(b"hello\n")
        at = term.read_until(b"Bot: reply 1: hello", start=at)
        at = term.read_until(b"You: ", start=at)
        term.write(b"slow\n")
        at = term.read_until(b"tick tick tick ", start=at)
        t0 = time.monotonic()
        term.write(b"\x03")  # Ctrl-C mid-reply
        at = term.read_until(b"[stopped]", timeout=5, start=at)
        h.check(time.monotonic() - t0 < 2.5 * SLOW, "the reply stops within the progress "
                "callback's second")
        h.check(e.gone.wait(5), "the transfer was aborted: the server saw the client go")
        at = term.read_until(b"You: ", start=at)
        # the conversation goes on, with what was shown of the stopped reply
        term.write(b"after\n")
        at = term.read_until(b"Bot: reply 3: after", start=at)
        msgs = e.messages(2)
        h.eq(msgs[:3], [user("hello"), assistant("reply 1: hello"), user("slow")])
        h.check(msgs[3]["role"] == "assistant" and msgs[3]["content"].startswith("tick tick tick"),
                f"the stopped reply, as far as it went: {msgs[3]}")
        h.eq(msgs[4], user("after"))
        # /clear on a terminal clears the screen and the conversation
        at = term.read_until(b"You: ", start=at)
        term.write(b"/clear\n")
        at = term.read_until(b"A new conversation", start=at)
        at = term.read_until(b"You: ", start=at)
        term.write(b"again\n")
        at = term.read_until(b"reply 4: again", start=at)
        h.eq(e.messages(3), [user("again")])
        at = term.read_until(b"You: ", start=at)
        # Ctrl-C at the prompt leaves
        term.write(b"\x03")
        h.eq(term.wait(), 0, "exit status after Ctrl-C at the prompt:")
    finally:
        term.close()
        e.close()


def test_ctrl_d_and_exit_leave(t):
    e = RecordingEngine()
    try:
        for keys in (b"\x04", b"/exit\n", b"  /EXIT\n"):
            term = Terminal(["-m", "tiny", "--api_base", e.url])
            try:
                term.read_until(b"You: ")
                term.write(keys)
                h.eq(term.wait(), 0, f"exit status after {keys!r}:")
            finally:
                term.close()
        h.eq(e.requests, [], "nothing was sent")
    finally:
        e.close()


if __name__ == "__main__":
    h.main(globals())
