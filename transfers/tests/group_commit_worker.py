"""Transfers coalesced into one batch by group commit, in a child process, so that a test can kill
the batch at a fault point.

Usage: python -m transfers.tests.group_commit_worker SOURCE:DESTINATION...
with GROUP_COMMIT=true and BANKCORE_FAULT_AT=<fault point>. One thread per pair, started together,
moves 30.00. The process counts a transfer in progress beside them (as under load, where another
thread's transfer is), so that they open a window and are made as one batch. Prints "batch N"
before the batch is made. Exits 86 at the fault point, 0 otherwise.
"""

import sys
import threading

import django


def main() -> int:
    django.setup()
    from bankcore.actors import Actor, Channel
    from bankcore.errors import ApplicationError
    from transfers import group_commit

    made = group_commit.transfers_create_batch

    def batch(**arguments):
        print("batch", len(arguments["items"]), flush=True)
        return made(**arguments)

    group_commit.transfers_create_batch = batch

    def move(source: str, destination: str, amount: str) -> None:
        try:
            group_commit.transfer_create(
                actor=Actor.system(Channel.COMMAND, "group-commit-worker"),
                source_account=source,
                destination_account=destination,
                amount=amount,
            )
        except ApplicationError as error:
            print(error.code, flush=True)

    with group_commit._lock:
        group_commit._in_progress += 1
    threads = [threading.Thread(target=move, args=(*pair.split(":"), "30.00")) for pair in sys.argv[1:]]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return 0


if __name__ == "__main__":
    sys.exit(main())
