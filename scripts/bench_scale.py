"""Scale benchmark (not a test): top-K over 1M and 10M items, exact against the item index; training at 1M items.

    .venv/bin/python scripts/bench_scale.py [--sizes 1000000,10000000] [--recall-users 2000] [--speed-users 128]
        [--repeats 3] [--train-sizes 10000,100000,1000000] [--train-steps 20]

(a) Top-K. For each catalogue size, in a subprocess of its own (so peak memory is that
    size's alone): clustered synthetic item vectors, item biases and users' query vectors
    (`recllm.data.synthetic_vectors`: sub-categories of Zipf sizes in a 16-dimensional latent
    space projected to 64), under the URM's scoring head (scale 20, the biases as
    `item_bias`). Reported: the item index's build time, size and the peak RSS the build
    added; recall@50 of the index's top-K against the exact chunked top-K for
    `--recall-users` users (five random items excluded for each), at nprobe 16, 32, 64, 128;
    and users/s of the exact path and of the index at each nprobe on the same
    `--speed-users` users, ONE thread each (one Spark task), in turn within each of
    `--repeats` rounds, medians. The peak RSS that top-K adds is measured for the speed
    users and for the recall users (15x as many): a worker's memory does not grow with
    its users.
(b) Training. For each of `--train-sizes` items, in a subprocess: the default model shape
    (`model:` defaults) with that many trained item IDs, random text vectors, and
    `--train-steps` steps of the project's optimizer (`recllm.training.loop.adamw`) over
    batches of `train.batch_size` synthetic prompts (ten history items each, targets drawn
    by Zipf popularity) under the sampled softmax with logQ correction
    (`train.num_negatives` negatives from the popularity proposal).
    Reported: steps/s (median step), peak RSS, and each size's steps/s over the smallest's.

Its last lines:
  ann recall@50 at 10M: X      (index top-50 against exact, at --nprobe: score.ann_nprobe)
  ann speedup at 10M: Y        (index users/s over exact users/s, one thread each, same users)
Progress goes to stderr, the tables to stdout.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from types import SimpleNamespace

import numpy as np
import torch

from bench_common import log, reset_peak_rss, status_mb
from bench_scoring import ScoreHead
from recllm.config import RecllmConfig
from recllm.model.urm import URM

K = 50
SCALE = 20.0


def _peak_above(fn):
    """(fn(), seconds, peak RSS MB above the RSS at the start)."""
    reset_peak_rss()
    base = status_mb("VmRSS")
    start = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - start, status_mb("VmHWM") - base


def _threads(n: int) -> None:
    import faiss

    torch.set_num_threads(n)
    faiss.omp_set_num_threads(n)


# -- (a) top-K ----------------------------------------------------------------------------------


class _VectorHead(ScoreHead):
    """The URM's scoring head (scale, item bias) over synthetic item vectors; its scoring methods are the URM's."""

    def __init__(self, bias: torch.Tensor, query_tokens: int, dim: int):
        super().__init__(SCALE)
        self.item_bias = torch.nn.Embedding(len(bias), 1)
        with torch.no_grad():
            self.item_bias.weight[:, 0] = bias
        self.config = SimpleNamespace(n_items_trained=len(bias), n_query_tokens=query_tokens, out_dim=dim)

    bias_of, query_keys, item_keys = URM.bias_of, URM.query_keys, URM.item_keys


def topk_worker(n_items: int, recall_users: int, speed_users: int, repeats: int, nprobe: int) -> dict:
    from recllm.data.synthetic_vectors import clustered_vectors
    from recllm.model.inference import Scorer
    from recllm.model.urm import ItemCatalog

    _threads(2)
    world, gen_s, _ = _peak_above(lambda: clustered_vectors(n_items, recall_users, seed=0))
    log(f"{n_items} items: vectors generated in {gen_s:.0f}s")
    catalog = ItemCatalog(torch.zeros(1, 1).expand(n_items, 1), torch.zeros(1, 0).expand(n_items, 0),
                          torch.zeros(1, dtype=torch.bool).expand(n_items), [str(i) for i in range(n_items)])
    head = _VectorHead(world.bias, world.users.shape[1], world.items.shape[1]).eval()
    scorer = Scorer(head, None, catalog, world.items, torch.device("cpu"))
    rng = np.random.default_rng(1)
    exclude = [rng.integers(0, n_items, 5).tolist() for _ in range(recall_users)]

    index, build_s, build_peak = _peak_above(lambda: scorer.attach_index(None, nprobe))
    log(f"{n_items} items: index built in {build_s:.0f}s ({index.index.nlist} lists)")
    (truth, _), truth_s, _ = _peak_above(lambda: scorer.top_k(world.users, K, exclude=exclude, exact=True))
    log(f"{n_items} items: exact top-{K} of {recall_users} users in {truth_s:.0f}s (2 threads)")

    _threads(1)
    probes = sorted({16, nprobe, 64, 128})
    recall = {}
    for probe in probes:
        scorer.nprobe = probe
        (found, _), _, many_peak = _peak_above(lambda: scorer.top_k(world.users, K, exclude=exclude))
        recall[probe] = float(np.mean([len(set(a) & set(b)) / K for a, b in zip(found.tolist(), truth.tolist())]))
        log(f"{n_items} items: nprobe {probe}: recall@{K} {recall[probe]:.4f} ({recall_users} users, peak +{many_peak:.0f} MB)")

    users, few = world.users[:speed_users], exclude[:speed_users]
    times = {p: [] for p in ["exact", *probes]}
    for r in range(repeats):
        _, seconds, exact_peak = _peak_above(lambda: scorer.top_k(users, K, exclude=few, exact=True))
        times["exact"].append(seconds)
        for probe in probes:
            scorer.nprobe = probe
            _, seconds, few_peak = _peak_above(lambda: scorer.top_k(users, K, exclude=few))
            times[probe].append(seconds)
        log(f"{n_items} items: round {r + 1}: exact {times['exact'][-1]:.1f}s, index "
            + ", ".join(f"nprobe {p} {times[p][-1]:.2f}s" for p in probes) + f" for {speed_users} users")
    users_s = {p: speed_users / statistics.median(t) for p, t in times.items()}
    return {"n_items": n_items, "lists": int(index.index.nlist), "build_s": build_s,
            "index_mb": index.size_bytes() / 2**20, "item_vectors_mb": world.items.numel() * 4 / 2**20,
            "build_peak_mb": build_peak, "recall": recall, "nprobe": nprobe,
            "exact_users_s": users_s["exact"], "ann_users_s": {p: users_s[p] for p in probes},
            "speedup": {p: users_s[p] / users_s["exact"] for p in probes},
            "topk_peak_mb_few": few_peak, "topk_peak_mb_many": many_peak, "exact_peak_mb": exact_peak,
            "speed_users": speed_users, "recall_users": recall_users}


# -- (b) training at catalogue scale ------------------------------------------------------------


def train_worker(n_items: int, steps: int) -> dict:
    from recllm.model.backbone import backbone_config_dict, build_backbone, is_causal
    from recllm.model.batching import Collator
    from recllm.model.tokens import ITEM_SLOT
    from recllm.model.urm import ItemCatalog, LossTargets, URMConfig, control_token_ids
    from recllm.training.loop import adamw

    torch.set_num_threads(2)
    torch.manual_seed(0)
    config = RecllmConfig()
    words = "recommend items this user will click next history clicked bought liked searched for".split()
    texts = [" ".join(words[i % 7:]) + f" {ITEM_SLOT}" for i in range(200)]
    backbone, tokenizer = build_backbone(config.model, texts)
    text_dim = 384
    urm_config = URMConfig.from_model_config(
        config.model, backbone=backbone_config_dict(backbone), n_items_trained=n_items, text_dim=text_dim,
        image_dim=0, causal=is_causal(backbone.config.model_type), pad_token_id=int(tokenizer.pad_token_id),
        **control_token_ids(tokenizer))
    reset_peak_rss()
    base = status_mb("VmRSS")
    model = URM(urm_config, backbone).train()
    g = torch.Generator().manual_seed(0)
    catalog = ItemCatalog(torch.randn(n_items, text_dim, generator=g), torch.zeros(n_items, 0),
                          torch.zeros(n_items, dtype=torch.bool), [str(i) for i in range(n_items)])
    counts = torch.from_numpy(np.random.default_rng(0).zipf(1.3, n_items).clip(max=10**6).astype(np.float64))
    sampling = ((counts + 1.0) ** 0.75 / ((counts + 1.0) ** 0.75).sum()).float()
    popularity = (counts / counts.sum()).float()
    collator = Collator(tokenizer, model.config)
    optimizer = adamw(model, config.train.lr, config.train.weight_decay)
    bs, history = config.train.batch_size, 10
    prompt = "recommend items this user will click next history " + " ".join(f"clicked {ITEM_SLOT}" for _ in range(history))
    tokens = collator.tokenize([prompt] * bs)

    def step() -> float:
        start = time.perf_counter()
        picks = torch.multinomial(popularity, bs * (history + 1), replacement=True, generator=g).view(bs, history + 1)
        batch = collator(tokens, picks[:, :history].tolist())
        targets = LossTargets(items=picks[:, history], labels=torch.full((bs,), float("nan")),
                              sampling_probs=sampling, num_negatives=config.train.num_negatives, ctr_weight=0.0)
        loss, _ = model(batch, catalog, targets)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        return time.perf_counter() - start

    for _ in range(2):
        step()
    seconds = [step() for _ in range(steps)]
    params_mb = sum(p.numel() for p in model.parameters()) * 4 / 2**20
    return {"n_items": n_items, "steps_s": 1 / statistics.median(seconds), "peak_mb": status_mb("VmHWM") - base,
            "params_mb": params_mb, "catalog_mb": catalog.text.numel() * 4 / 2**20, "batch": bs,
            "negatives": config.train.num_negatives}


# -- the driver -----------------------------------------------------------------------------------


def _subprocess(args: list[str]) -> dict:
    """Run a worker (its progress passes through to stderr); its last stdout line is its JSON result."""
    out = subprocess.run([sys.executable, __file__, *args], stdout=subprocess.PIPE, text=True)
    if out.returncode:
        raise SystemExit(f"worker {args} failed with exit code {out.returncode}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def _label(n: int) -> str:
    return f"{n // 1_000_000}M" if n >= 1_000_000 and n % 1_000_000 == 0 else f"{n // 1000}k"


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] in ("--topk-worker", "--train-worker"):
        worker = topk_worker if sys.argv[1] == "--topk-worker" else train_worker
        print(json.dumps(worker(*(int(a) for a in sys.argv[2:]))))
        return
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sizes", default="1000000,10000000", help="catalogue sizes for top-K, comma-separated")
    parser.add_argument("--recall-users", type=int, default=2000, help="users whose ANN top-50 is checked against exact")
    parser.add_argument("--speed-users", type=int, default=128, help="users timed on both paths, one thread each")
    parser.add_argument("--repeats", type=int, default=3, help="timed rounds; medians are reported")
    parser.add_argument("--nprobe", type=int, default=RecllmConfig().score.ann_nprobe, help="index lists per query")
    parser.add_argument("--train-sizes", default="10000,100000,1000000", help="trained item IDs, comma-separated")
    parser.add_argument("--train-steps", type=int, default=20, help="timed optimizer steps per training size")
    args = parser.parse_args()

    train_rows = []
    for n in (int(s) for s in args.train_sizes.split(",") if s):
        log(f"training with {n} items")
        train_rows.append(_subprocess(["--train-worker", str(n), str(args.train_steps)]))
    topk_rows = []
    for n in (int(s) for s in args.sizes.split(",") if s):
        log(f"top-K over {n} items")
        topk_rows.append(_subprocess(["--topk-worker", str(n), str(args.recall_users), str(args.speed_users),
                                      str(args.repeats), str(args.nprobe)]))

    if train_rows:
        base = train_rows[0]["steps_s"]
        print("\nSampled-softmax training (default model shape, 2 threads), median step:")
        print(f"{'items':>8} {'steps/s':>8} {'vs first':>9} {'peak RSS MB':>12} {'params MB':>10} {'text MB':>8}")
        for r in train_rows:
            print(f"{_label(r['n_items']):>8} {r['steps_s']:8.2f} {r['steps_s'] / base:9.2f} {r['peak_mb']:12.0f} "
                  f"{r['params_mb']:10.0f} {r['catalog_mb']:8.0f}")
    if topk_rows:
        print(f"\nTop-{K}: exact chunked top-K and the item index (faiss IVF), one thread each, {args.speed_users} users "
              f"timed, recall over {args.recall_users}:")
        print(f"{'items':>6} {'lists':>6} {'build s':>8} {'index MB':>9} {'vectors MB':>10} {'build peak MB':>13} "
              f"{'exact u/s':>9} {'peak MB ' + str(args.speed_users) + 'u':>12} {'peak MB ' + str(args.recall_users) + 'u':>13}")
        for r in topk_rows:
            print(f"{_label(r['n_items']):>6} {r['lists']:6d} {r['build_s']:8.0f} {r['index_mb']:9.0f} "
                  f"{r['item_vectors_mb']:10.0f} {r['build_peak_mb']:13.0f} {r['exact_users_s']:9.1f} "
                  f"{r['topk_peak_mb_few']:12.0f} {r['topk_peak_mb_many']:13.0f}")
        print(f"\n{'items':>6} {'nprobe':>6} {'recall@50':>9} {'index u/s':>9} {'speedup':>8}")
        for r in topk_rows:
            for p, rec in r["recall"].items():
                print(f"{_label(r['n_items']):>6} {p:>6} {rec:9.4f} {r['ann_users_s'][p]:9.0f} {r['speedup'][p]:8.1f}")
        last, probe = topk_rows[-1], str(args.nprobe)
        print(f"ann recall@50 at {_label(last['n_items'])}: {last['recall'][probe]:.4f}")
        print(f"ann speedup at {_label(last['n_items'])}: {last['speedup'][probe]:.1f}")


if __name__ == "__main__":
    main()
