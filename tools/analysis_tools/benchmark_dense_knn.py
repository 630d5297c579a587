"""Time and peak memory of the dense k-NN search
(:func:`mrcl_plugin.evaluation.dense.knn_patch_labels`) against the size of
the memory bank, to decide whether an approximate index (``faiss-cpu``)
is needed at ADE20K size (docs/evaluation.md).

Each bank size runs in a fresh process (so one's allocations do not colour
the next), on random unit features and random label distributions (the
search's cost does not depend on their values): ``--queries`` query
patches, k = 30, both temperatures. Reported per size:

- ``search_s``: wall time of the search;
- ``bank_MB``: the bank's features and labels;
- ``peak_MB``: the growth of the process's peak resident size during the
  search, above what it held before (the bank included, filled in slices
  so that making it leaves no higher peak): the search's working memory,
  which chunking bounds.

    PYTHONPATH=. python tools/analysis_tools/benchmark_dense_knn.py \\
        [--banks 10000 100000 1000000] [--dim 192] [--queries 4096]
"""
import argparse
import json
import resource
import subprocess
import sys
import time


def measure(bank: int, dim: int, queries: int, classes: int,
            bank_chunk: int) -> dict:
    import torch

    from mrcl_plugin.evaluation.dense import knn_patch_labels
    g = torch.Generator().manual_seed(0)
    # filled in slices: no temporary larger than a slice raises the peak
    feats = torch.empty(bank, dim)
    labels = torch.empty(bank, classes)
    for i in range(0, bank, 65536):
        feats[i:i + 65536] = torch.nn.functional.normalize(
            torch.randn(len(feats[i:i + 65536]), dim, generator=g), dim=1)
        part = torch.rand(len(labels[i:i + 65536]), classes, generator=g)
        labels[i:i + 65536] = part / part.sum(1, keepdim=True)
    query = torch.nn.functional.normalize(
        torch.randn(queries, dim, generator=g), dim=1)
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    start = time.perf_counter()
    knn_patch_labels(feats, labels, query, k=30, temperatures=(0.02, 0.07),
                     bank_chunk=bank_chunk)
    seconds = time.perf_counter() - start
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return dict(bank=bank, dim=dim, queries=queries,
                search_s=round(seconds, 2),
                bank_MB=round((feats.nbytes + labels.nbytes) / 2**20),
                peak_MB=round(peak - before),
                threads=torch.get_num_threads())


def main():
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--banks', type=int, nargs='+',
                        default=[10_000, 100_000, 1_000_000])
    parser.add_argument('--dim', type=int, default=192)
    parser.add_argument('--queries', type=int, default=4096)
    parser.add_argument('--classes', type=int, default=133)
    parser.add_argument('--bank-chunk', type=int, default=32768)
    parser.add_argument('--one', type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one:
        print(json.dumps(measure(args.one, args.dim, args.queries,
                                 args.classes, args.bank_chunk)))
        return
    print('| bank patches | dim | queries | search s | queries/s | bank MB '
          '| peak growth MB |')
    print('|---|---|---|---|---|---|---|')
    for bank in args.banks:
        out = subprocess.run(
            [sys.executable, __file__, '--one', str(bank), '--dim',
             str(args.dim), '--queries', str(args.queries), '--classes',
             str(args.classes), '--bank-chunk', str(args.bank_chunk)],
            check=True, capture_output=True, text=True).stdout
        r = json.loads(out.strip().splitlines()[-1])
        print(f'| {r["bank"]:,} | {r["dim"]} | {r["queries"]:,} | '
              f'{r["search_s"]} | {r["queries"] / r["search_s"]:,.0f} | '
              f'{r["bank_MB"]:,} | {r["peak_MB"]:,} |', flush=True)


if __name__ == '__main__':
    main()
