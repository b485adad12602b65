"""mmcourse.distributed: two gloo processes on loopback give the loss and gradients of one process
holding the concatenated batch (and of open_clip's ClipLoss(local_loss=True, gather_with_grad=True))."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
import torch.nn.functional as F

from mmcourse import distributed
from mmcourse.losses import clip_loss

WORLD = 2
N_LOCAL, D, SCALE = 5, 7, 20.0

# only the tests that start processes need gloo; the single-process behaviour is tested everywhere
needs_gloo = pytest.mark.skipif(
    not (dist.is_available() and dist.is_gloo_available()), reason="needs torch.distributed with gloo"
)


def _global_batch():
    """The whole batch (WORLD * N_LOCAL pairs); rank r holds rows r * N_LOCAL ... (r + 1) * N_LOCAL."""
    g = torch.Generator().manual_seed(0)
    img = F.normalize(torch.randn(WORLD * N_LOCAL, D, generator=g, dtype=torch.float64), dim=1)
    txt = F.normalize(img + torch.randn(WORLD * N_LOCAL, D, generator=g, dtype=torch.float64), dim=1)
    return img, txt


def _worker(rank: int, world_size: int, device: torch.device, out_dir: str) -> None:
    """One rank: its slice of the batch through distributed_clip_loss, results saved for the parent."""
    torch.set_num_threads(1)
    img, txt = _global_batch()
    rows = slice(rank * N_LOCAL, (rank + 1) * N_LOCAL)
    local_img, local_txt = img[rows].clone().requires_grad_(), txt[rows].clone().requires_grad_()
    scale = torch.tensor(SCALE, dtype=torch.float64, requires_grad=True)
    loss = distributed.distributed_clip_loss(local_img, local_txt, scale)
    loss.backward()

    # all_gather_with_grad alone: rank order, and gradients summed over ranks for each slice
    x = torch.full((2, 3), float(rank + 1), dtype=torch.float64, requires_grad=True)
    gathered = distributed.all_gather_with_grad(x)
    weights = torch.arange(gathered.numel(), dtype=torch.float64).reshape(gathered.shape) * (rank + 1)
    (gathered * weights).sum().backward()

    # the oracle: open_clip's own distributed formulation, in the same processes
    oracle = None
    try:
        from open_clip.loss import ClipLoss

        oracle = ClipLoss(local_loss=True, gather_with_grad=True, rank=rank, world_size=world_size)(
            img[rows], txt[rows], torch.tensor(SCALE, dtype=torch.float64)
        ).detach()
    except ImportError:
        pass

    mismatch = None
    try:
        distributed.all_gather_with_grad(torch.zeros(2 + rank, 3))
    except ValueError as err:
        mismatch = str(err)

    torch.save(
        dict(
            world=(distributed.rank(), distributed.world_size()),
            loss=loss.detach(), d_img=local_img.grad, d_txt=local_txt.grad, d_scale=scale.grad,
            gathered=gathered.detach(), d_x=x.grad, oracle=oracle, mismatch=mismatch,
        ),
        Path(out_dir) / f"rank{rank}.pt",
    )


@pytest.fixture(scope="module")
def ranks(tmp_path_factory):
    if not (dist.is_available() and dist.is_gloo_available()):
        pytest.skip("needs torch.distributed with gloo")
    out = tmp_path_factory.mktemp("ranks")
    distributed.launch(_worker, WORLD, str(out), backend="gloo", timeout_s=60)
    return [torch.load(out / f"rank{r}.pt") for r in range(WORLD)]


def test_each_process_knows_its_rank(ranks):
    assert [r["world"] for r in ranks] == [(0, WORLD), (1, WORLD)]


def test_all_gather_concatenates_in_rank_order_and_sums_gradients_over_ranks(ranks):
    expected = torch.cat([torch.full((2, 3), 1.0), torch.full((2, 3), 2.0)]).double()
    for r in ranks:
        torch.testing.assert_close(r["gathered"], expected)
    # rank k's loss is sum(gathered * (k + 1) * arange): slice r receives sum_k (k + 1) * arange[slice r]
    base = torch.arange(12, dtype=torch.float64).reshape(4, 3)
    for rank, r in enumerate(ranks):
        torch.testing.assert_close(r["d_x"], (1 + 2) * base[2 * rank : 2 * rank + 2])


def test_loss_and_gradients_equal_one_process_on_the_concatenated_batch(ranks):
    img, txt = _global_batch()
    img.requires_grad_(), txt.requires_grad_()
    scale = torch.tensor(SCALE, dtype=torch.float64, requires_grad=True)
    loss = clip_loss(img, txt, scale)
    loss.backward()
    # the mean of the local losses is the whole-batch loss ...
    torch.testing.assert_close(torch.stack([r["loss"] for r in ranks]).mean(), loss.detach())
    # ... and, once DDP averages gradients over the ranks, so are the gradients
    torch.testing.assert_close(torch.cat([r["d_img"] for r in ranks]) / WORLD, img.grad)
    torch.testing.assert_close(torch.cat([r["d_txt"] for r in ranks]) / WORLD, txt.grad)
    torch.testing.assert_close(torch.stack([r["d_scale"] for r in ranks]).mean(), scale.grad)


def test_local_losses_equal_open_clip_local_loss(ranks):
    if ranks[0]["oracle"] is None:
        pytest.skip("open_clip is not installed")
    for r in ranks:
        torch.testing.assert_close(r["loss"], r["oracle"])


def test_unequal_batches_across_ranks_are_explained(ranks):
    for r in ranks:
        assert r["mismatch"] is not None and "[2, 3]" in r["mismatch"] and "drop_last" in r["mismatch"]


def test_without_a_process_group_everything_is_local():
    assert not distributed.is_distributed() and distributed.world_size() == 1 and distributed.rank() == 0
    x = torch.randn(3, 4)
    assert distributed.all_gather_with_grad(x) is x
    img, txt = _global_batch()
    torch.testing.assert_close(distributed.distributed_clip_loss(img, txt, SCALE), clip_loss(img, txt, SCALE))


def test_bad_arguments_are_explained():
    with pytest.raises(ValueError, match="paired"):
        distributed.distributed_clip_loss(torch.zeros(3, 4), torch.zeros(2, 4), 1.0)
    with pytest.raises(ValueError, match="rank must be in"):
        distributed.init(2, 2, port=1)
    with pytest.raises(ValueError, match="nprocs"):
        distributed.launch(_worker, 0)


@needs_gloo
def test_training_in_two_processes_matches_one_process():
    """`train_clip(nproc=2)`: two gloo processes, each half of every batch, features gathered; with no
    batch norm (a ViT image encoder) the weights match single-process training on the whole batch."""
    from mmcourse.recipes.clip_shapes import train as train_clip

    config = {"image": {"kind": "vit", "width": 16, "layers": 1, "heads": 2, "patch": 8},
              "text": {"kind": "transformer", "width": 16, "layers": 1, "heads": 2}, "embed_dim": 16}
    kwargs = dict(seed=1, steps=3, batch_size=16, config=config, progress=False, evaluate=False, log_every=1)
    one, m1 = train_clip(nproc=1, **kwargs)
    two, m2 = train_clip(nproc=2, **kwargs)
    assert [h["loss"] for h in m1["history"]] == pytest.approx([h["loss"] for h in m2["history"]], abs=1e-3)
    # compare the functions, not raw weights: the attention's key bias gets a gradient that is zero in
    # exact arithmetic (softmax ignores it), and Adam turns its rounding noise into full-size steps
    images, captions = torch.rand(4, 3, 32, 32, generator=torch.Generator().manual_seed(0)), ["a red square", "a star"]
    with torch.no_grad():
        assert torch.allclose(one.encode_image(images), two.encode_image(images), atol=1e-4)
        assert torch.allclose(one.encode_text(captions), two.encode_text(captions), atol=1e-4)
        assert torch.allclose(one.logit_scale, two.logit_scale, atol=1e-6)


def test_nproc_must_divide_the_batch():
    from mmcourse.recipes.clip_shapes import train as train_clip

    with pytest.raises(ValueError, match="divide batch_size"):
        train_clip(nproc=3, batch_size=16, steps=1, evaluate=False, progress=False)


# ------------------------------------------------------------------------------ torchrun and the command line

TINY = {"image": {"kind": "vit", "width": 16, "layers": 1, "heads": 2, "patch": 8},
        "text": {"kind": "transformer", "width": 16, "layers": 1, "heads": 2}, "embed_dim": 16}
TRAIN = ["train", "clip_shapes", "--steps", "3", "--batch-size", "16", "--seed", "1", "--quiet", "--no-evaluate",
         "--config", json.dumps(TINY)]
ROOT = Path(__file__).resolve().parents[1]


def _clean_env(**extra) -> dict:
    env = {k: v for k, v in os.environ.items() if k not in (*distributed.ENV_VARS, "LOCAL_WORLD_SIZE")}
    return {**env, **extra}


def _trained(folder: Path):
    """The model and card that `mmcourse train --out folder` wrote (and nothing else was left there)."""
    from safetensors.torch import load_file

    from mmcourse.models import CLIP

    assert sorted(p.name for p in folder.iterdir()) == ["clip_shapes.json", "clip_shapes.safetensors"]
    card = json.loads((folder / "clip_shapes.json").read_text())
    model = CLIP(**card["config"])
    model.load_state_dict(load_file(folder / "clip_shapes.safetensors"))
    return model.eval(), card


def _same_function(a, b) -> None:
    images = torch.rand(4, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    captions = ["a red square", "a star"]
    with torch.no_grad():
        assert torch.allclose(a.encode_image(images), b.encode_image(images), atol=1e-4)
        assert torch.allclose(a.encode_text(captions), b.encode_text(captions), atol=1e-4)
        assert torch.allclose(a.logit_scale, b.logit_scale, atol=1e-6)


@needs_gloo
def test_torchrun_equals_nproc_and_one_process(tmp_path):
    """`torchrun --standalone --nproc-per-node 2 -m mmcourse train clip_shapes` (env:// from torchrun's
    variables), `mmcourse train --nproc 2` (spawned, the same code path) and one process on the whole batch
    give the same global losses and the same function; only rank 0 writes, and nothing half-written stays."""
    from mmcourse.recipes.clip_shapes import train as train_clip

    torchrun = Path(sys.executable).with_name("torchrun")
    runs = {"torchrun": [str(torchrun), "--standalone", "--nproc-per-node", "2", "-m", "mmcourse", *TRAIN],
            "nproc": [sys.executable, "-m", "mmcourse", *TRAIN, "--nproc", "2"]}
    for name, cmd in runs.items():
        proc = subprocess.run([*cmd, "--out", str(tmp_path / name)], capture_output=True, text=True, cwd=ROOT,
                              env=_clean_env(), timeout=600)
        assert proc.returncode == 0, (name, proc.stderr[-3000:])
        assert "rank 0 of 2: joined" in proc.stderr and "rank 1 of 2: joined" in proc.stderr, proc.stderr[-2000:]
        assert proc.stdout.count("wrote ") == 1, "only rank 0 writes the checkpoint"
    one, metrics = train_clip(nproc=1, seed=1, steps=3, batch_size=16, config=TINY, progress=False, evaluate=False)
    for name in runs:
        model, card = _trained(tmp_path / name)
        assert card["metrics"]["nproc"] == 2 and card["metrics"]["launcher"] == ("torchrun" if name == "torchrun" else "spawn")
        assert [h["loss"] for h in card["metrics"]["history"]] == pytest.approx(
            [h["loss"] for h in metrics["history"]], abs=1e-3)
        _same_function(model, one)


def _read(path: Path) -> str:
    return path.read_text() if path.exists() else ""


@needs_gloo
def test_a_rank_that_dies_stops_the_others_with_a_clear_error(tmp_path):
    """Two ranks started the way torchrun starts them (its variables in the environment); rank 1 is killed
    mid-training. Rank 0 stops with a clear error within the collective timeout and writes nothing."""
    timeout = 10
    port = distributed.free_port()
    out = tmp_path / "out"
    cmd = [sys.executable, "-m", "mmcourse", *TRAIN, "--steps", "100000", "--out", str(out),
           "--collective-timeout", str(timeout)]
    procs, logs = [], []
    for rank in range(2):
        env = _clean_env(RANK=str(rank), WORLD_SIZE="2", LOCAL_RANK=str(rank), LOCAL_WORLD_SIZE="2",
                         MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
        logs.append(tmp_path / f"rank{rank}.log")
        with open(logs[-1], "w") as log:
            procs.append(subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, cwd=ROOT, env=env))
    try:
        deadline = time.monotonic() + 300
        while not all("joined" in _read(log) for log in logs):
            assert time.monotonic() < deadline and all(p.poll() is None for p in procs), [_read(x) for x in logs]
            time.sleep(0.2)
        time.sleep(2)  # training under way
        procs[1].kill()
        killed = time.monotonic()
        rc = procs[0].wait(timeout=timeout + 120)
        stopped_after = time.monotonic() - killed
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait()
    text = _read(logs[0])
    assert rc == 1, text[-3000:]
    assert "rank 0 of 2 stopped: a collective operation failed" in text and "nothing was written" in text, text[-3000:]
    assert stopped_after < timeout + 60, stopped_after
    assert not out.exists() or not list(out.iterdir()), "no checkpoint, not even half of one"


def test_torchrun_variables_are_read_and_checked():
    assert distributed.from_environment({}) is None
    env = dict(RANK="1", WORLD_SIZE="4", LOCAL_RANK="1", LOCAL_WORLD_SIZE="2", MASTER_ADDR="node0", MASTER_PORT="29500")
    assert distributed.from_environment(env) == distributed.Placement(1, 4, 1, 2)
    with pytest.raises(ValueError, match="MASTER_ADDR is not"):
        distributed.from_environment({**env, "MASTER_ADDR": ""})
    with pytest.raises(ValueError, match="must be integers"):
        distributed.from_environment({**env, "RANK": "one"})
    with pytest.raises(ValueError, match="inconsistent"):
        distributed.from_environment({**env, "RANK": "4"})


def test_torchrun_owns_the_processes(monkeypatch):
    from mmcourse.recipes.clip_shapes import train as train_clip

    for key, value in dict(RANK="0", WORLD_SIZE="2", LOCAL_RANK="0", MASTER_ADDR="127.0.0.1", MASTER_PORT="1").items():
        monkeypatch.setenv(key, value)
    with pytest.raises(ValueError, match="drop --nproc 4"):
        train_clip(nproc=4, batch_size=16, steps=1, evaluate=False, progress=False)
