"""Run by the resume tests in a fresh process: restore a stream state and read to the end of the epoch."""

import json
import sys

from distdiff.data import build_stream


def main() -> None:
    source, state_file, out_file, batch_size, world_size, ranks, seed, workers = sys.argv[1:9]
    state = json.loads(open(state_file).read())
    out = {"indices": {}, "metrics": {}}
    for rank in map(int, ranks.split(",")):
        stream = build_stream(source, int(batch_size), rank, int(world_size), int(seed), int(workers), epochs=1)
        stream.load_state_dict(state)
        out["indices"][rank] = [i for batch in stream for i in batch["index"].tolist()]
        out["metrics"][rank] = stream.metrics()
    open(out_file, "w").write(json.dumps(out))


if __name__ == "__main__":
    main()
