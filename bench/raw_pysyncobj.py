"""One process of a bare pysyncobj cluster: the baseline the store is measured against.

Same Raft settings as the store (journal file, cluster password,
appendEntriesUseBatch=False), a trivial replicated method, no SQLite and no
client protocol. The process that ends up leader runs the benchmark loop and
writes its result as JSON; the others wait for that file and exit.
"""

import argparse
import json
import os
import threading
import time

from pysyncobj import SyncObj, SyncObjConf, replicated


class Counter(SyncObj):
    def __init__(self, bind, peers, conf):
        super().__init__(bind, peers, conf)
        self.value = 0

    @replicated
    def put(self, payload):
        self.value += 1
        return self.value


def run(args):
    conf = SyncObjConf(
        password=args.secret, appendEntriesUseBatch=False, journalFile=args.journal,
        dynamicMembershipChange=True, commandsWaitLeader=False,
    )
    node = Counter(args.bind, args.peers.split(","), conf)
    deadline = time.monotonic() + 30
    while node._getLeader() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    time.sleep(0.5)
    if node._isLeader():
        result = {}
        for threads in args.threads:
            result[str(threads)] = measure(node, threads, args.ops)
        tmp = args.result + ".tmp"
        with open(tmp, "w") as handle:
            json.dump(result, handle)
        os.replace(tmp, args.result)
    else:
        while not os.path.exists(args.result) and time.monotonic() < deadline + 300:
            time.sleep(0.1)
    time.sleep(0.5)
    node.destroy()


def measure(node, threads, ops):
    per_thread = ops // threads
    payload = b"x" * 32

    def work():
        for _ in range(per_thread):
            node.put(payload, sync=True, timeout=10)

    workers = [threading.Thread(target=work) for _ in range(threads)]
    started = time.perf_counter()
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    return per_thread * threads / (time.perf_counter() - started)


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--bind", required=True)
    parser.add_argument("--peers", required=True)
    parser.add_argument("--journal", required=True)
    parser.add_argument("--secret", required=True)
    parser.add_argument("--result", required=True)
    parser.add_argument("--ops", type=int, default=2000)
    parser.add_argument("--threads", type=int, nargs="+", default=[1, 8])
    run(parser.parse_args())
