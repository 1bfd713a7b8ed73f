"""A real SMTP server for the tests, on aiosmtpd.

Usage: smtp_sink.py PORT DIR

Every accepted message is stored as DIR/<n>.eml (the bytes as received) and then
DIR/<n>.json (the envelope: mail_from, rcpt_tos, and the client's source port, which names
its connection), written last so a reader that sees the
JSON sees the whole message. Recipients are answered by their local part, so a test can ask
for failures: `tempfail...@` gets 451 (temporary), `reject...@` gets 550 (permanent), and
`slow...@` makes the server take 2 seconds to accept the message's data. A file
DIR/tempfail holding a number N makes the next N recipients get 451, whoever they are.

With SINK_TLS_CERT and SINK_TLS_KEY (PEM files) in the environment it requires STARTTLS
before MAIL; with SINK_AUTH=user:password it requires that login (AUTH PLAIN or LOGIN, only
over TLS). The envelope JSON then also says whether the session was TLS and who logged in.
"""

import asyncio
import json
import os
import ssl
import sys
import threading
import time

from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult


class Sink:
    def __init__(self, folder):
        self.folder = folder

    async def handle_RCPT(self, server, session, envelope, address, rcpt_options):
        local = address.split("@")[0].lower()
        budget = os.path.join(self.folder, "tempfail")
        if os.path.exists(budget):
            with open(budget) as f:
                left = int(f.read().strip() or "0")
            if left > 0:
                with open(budget, "w") as f:
                    f.write(str(left - 1))
                return "451 4.3.0 Try again later"
        if local.startswith("tempfail"):
            return "451 4.3.0 Try again later"
        if local.startswith("reject"):
            return "550 5.1.1 No such user here"
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server, session, envelope):
        if any(r.split("@")[0].lower().startswith("slow") for r in envelope.rcpt_tos):
            await asyncio.sleep(2)
        name = "%d" % time.time_ns()
        base = os.path.join(self.folder, name)
        with open(base + ".eml", "wb") as f:
            f.write(envelope.original_content)
        with open(base + ".json.tmp", "w") as f:
            login = session.auth_data.login.decode() if session.auth_data else None
            json.dump({"mail_from": envelope.mail_from, "rcpt_tos": envelope.rcpt_tos,
                       "peer_port": session.peer[1], "tls": session.ssl is not None,
                       "login": login}, f)
        os.rename(base + ".json.tmp", base + ".json")
        return "250 2.0.0 Ok: queued as " + name


def main():
    port, folder = int(sys.argv[1]), sys.argv[2]
    os.makedirs(folder, exist_ok=True)
    options = {}
    cert, key = os.environ.get("SINK_TLS_CERT"), os.environ.get("SINK_TLS_KEY")
    if cert and key:
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        context.load_cert_chain(cert, key)
        options.update(tls_context=context, require_starttls=True)
    credentials = os.environ.get("SINK_AUTH")
    if credentials:
        user, password = credentials.split(":", 1)

        def authenticator(server, session, envelope, mechanism, auth_data):
            ok = auth_data.login.decode() == user and auth_data.password.decode() == password
            return AuthResult(success=ok, handled=False, auth_data=auth_data if ok else None)

        options.update(authenticator=authenticator, auth_required=True,
                       auth_require_tls=bool(cert))
    controller = Controller(Sink(folder), hostname="127.0.0.1", port=port,
                            server_hostname="sink.test", **options)
    controller.start()
    threading.Event().wait()


if __name__ == "__main__":
    main()
