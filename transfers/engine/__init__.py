"""The transfer engine, split by step; ``transfers.services`` is its public door.

- ``accept``  — validation, the idempotency key (claim, replay, release) and the accept commit;
                it chooses the transfer's form;
- ``local``   — a transfer inside one ledger: one atomic block;
- ``cross``   — across ledgers, five commits (accept, prepare, decide, finish, complete);
- ``home``    — across ledgers when one leg's ledger shares the control plane's server: three;
- ``legs``    — the leg API every form and recovery use: prepare, decide, commit, void (also
                from what a ledger alone knows of a leg);
- ``outcome`` — the transfer's state in the control plane: completed, aborted, the committed hint;
- ``checks``  — where a leg's account is, and the checks made under its row lock;
- ``batch``   — many transfers at once, in a constant number of commits per ledger involved.

The protocol and its recovery are described in docs/architecture.md.
"""
