"""BatchNorm over the global batch of a data-parallel run equals BatchNorm over the whole batch in one process.

Both engines' layers (models/_torch_global_bn.py, models/_keras_global_bn.py)
on two replicas of one machine: the output, the input gradient, the weight
gradients and the moving statistics match the one-process layer on the whole
batch, while each replica's own statistics would not. The runs over two SLURM
nodes are in tests/test_slurm_multinode.py.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from tests._ports import free_port

ROOT = Path(__file__).resolve().parents[1]
# float32 over a few dozen values per channel: summation order moves the last bits only (measured < 1e-6).
ATOL = 1e-4

TORCH_RANK = """
import sys, torch, torch.distributed as dist
from models._torch_global_bn import to_global_batchnorm
rank, port = int(sys.argv[1]), sys.argv[2]
dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=2)
torch.manual_seed(0)
x = torch.randn(6, 3, 2, 4, 4) * 3 + 1            # (N, C, T, H, W); rank r takes clips r, r + 2, r + 4
w = torch.randn(6, 3, 2, 4, 4)                     # a loss that weighs every output differently
def layer():
    bn = torch.nn.BatchNorm3d(3, momentum=0.5)
    with torch.no_grad():
        bn.weight.copy_(torch.tensor([1.0, 2.0, 0.5])); bn.bias.copy_(torch.tensor([0.0, -1.0, 1.0]))
    return bn
ref, xr = layer(), x.clone().requires_grad_()      # one process, the whole batch
yr = ref(xr); (yr * w).sum().backward()
own = layer()(x[rank::2])                          # this replica's statistics only
net = to_global_batchnorm(torch.nn.Sequential(layer()))
mine = x[rank::2].clone().requires_grad_()
y = net(mine); (y * w[rank::2]).sum().backward()
bn = net[0]
grads = [bn.weight.grad.clone(), bn.bias.grad.clone()]
for g in grads: dist.all_reduce(g)                 # what DDP sums over the ranks
def whole(t):
    parts = [torch.zeros_like(t) for _ in range(2)]; dist.all_gather(parts, t.contiguous())
    out = torch.empty_like(x); out[0::2], out[1::2] = parts; return out
pairs = [(whole(y.detach()), yr.detach()), (whole(mine.grad), xr.grad), (grads[0], ref.weight.grad),
         (grads[1], ref.bias.grad), (bn.running_mean, ref.running_mean), (bn.running_var, ref.running_var)]
print(type(bn).__name__, max(float((a - b).abs().max()) for a, b in pairs), float((own - yr[rank::2]).abs().max()))
dist.destroy_process_group()
"""



def test_torch_global_batchnorm_over_two_processes_is_batchnorm_over_the_whole_batch():
    port = str(free_port())
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    procs = [subprocess.Popen([sys.executable, "-c", TORCH_RANK, str(rank), port], cwd=ROOT, env=env, text=True,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE) for rank in (0, 1)]  # fmt: skip
    for p in procs:
        out, err = p.communicate(timeout=180)
        assert p.returncode == 0, err[-3000:]
        name, diff, own = out.split()[-3:]
        assert name == "GlobalBatchNorm"
        assert float(diff) < ATOL, out
        assert float(own) > 0.05, out  # the replica's own statistics are visibly another layer


KERAS_TWO_REPLICAS = """
import numpy as np
from models._keras_global_bn import to_global_batchnorm
from utils.core.tf_env import tf, tf_keras
cpu = tf.config.list_physical_devices("CPU")[0]
tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
strategy = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])
rng = np.random.default_rng(0)
# (N, H, W, C): 3 values per channel and clip, a small count where the unbiased moving variance matters
x = (rng.normal(size=(4, 1, 3, 2)) * 3 + 1).astype("float32")
w = rng.normal(size=x.shape).astype("float32")
def layer():
    bn = tf_keras.layers.BatchNormalization(momentum=0.5)
    bn.build(x.shape)
    bn.set_weights([np.array([1.0, 2.0], "float32"), np.array([0.0, -1.0], "float32"), np.zeros(2, "float32"),
                    np.ones(2, "float32")])
    return bn
ref, xr = layer(), tf.constant(x)                  # one process, the whole batch (the fused kernel)
with tf.GradientTape() as tape:
    tape.watch(xr)
    yr = ref(xr, training=True)
    loss = tf.reduce_sum(yr * w)
gx_ref, *gw_ref = tape.gradient(loss, [xr, *ref.trainable_variables])
own = layer()(x[:2], training=True).numpy()        # the first replica's statistics only
with strategy.scope():
    bn = layer()
    changed = to_global_batchnorm(tf_keras.Sequential([bn]))
def replica(xs, ws):
    with tf.GradientTape() as tape:
        tape.watch(xs)
        y = bn(xs, training=True)
        loss = tf.reduce_sum(y * ws)
    gx, *gw = tape.gradient(loss, [xs, *bn.trainable_variables])
    ctx = tf.distribute.get_replica_context()
    return y, gx, [ctx.all_reduce(tf.distribute.ReduceOp.SUM, g) for g in gw]
data = tf.data.Dataset.from_tensor_slices((x, w)).batch(4)   # one global batch: 2 clips per replica
xb, wb = next(iter(strategy.experimental_distribute_dataset(data)))
y, gx, gw = tf.function(lambda a, b: strategy.run(replica, args=(a, b)))(xb, wb)
local = strategy.experimental_local_results
pairs = [(np.concatenate([t.numpy() for t in local(y)]), yr.numpy()),
         (np.concatenate([t.numpy() for t in local(gx)]), gx_ref.numpy()),
         (local(gw[0])[0].numpy(), gw_ref[0].numpy()), (local(gw[1])[0].numpy(), gw_ref[1].numpy()),
         (bn.moving_mean.numpy(), ref.moving_mean.numpy()), (bn.moving_variance.numpy(), ref.moving_variance.numpy())]
print(changed, max(float(np.abs(a - b).max()) for a, b in pairs), float(np.abs(own - yr.numpy()[:2]).max()))
"""


def _two_process_run(code: str, *args: str, timeout: int = 240) -> list[str]:
    r = subprocess.run([sys.executable, "-c", code, *args], cwd=ROOT, capture_output=True, text=True, timeout=timeout,
                       env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"})  # fmt: skip
    assert r.returncode == 0, r.stderr[-3000:]
    return r.stdout.split()[-3:]


def test_keras_global_batchnorm_over_two_replicas_is_batchnorm_over_the_whole_batch():
    changed, diff, own = _two_process_run(KERAS_TWO_REPLICAS)
    assert changed == "1"
    assert float(diff) < ATOL, diff
    assert float(own) > 0.05, own  # the replica's own statistics are visibly another layer
