"""A tiny MultiWorkerMirroredStrategy job: one all-reduce per step across every worker
that TF_CONFIG lists. Prints one line when it completes."""

import json
import os

os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")  # tf-keras: see launch.sh
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np
import tensorflow as tf

tf.config.threading.set_inter_op_parallelism_threads(1)
tf.config.threading.set_intra_op_parallelism_threads(1)

task = json.loads(os.environ["TF_CONFIG"])["task"]
strategy = tf.distribute.MultiWorkerMirroredStrategy()

x = np.arange(64, dtype="float32").reshape(16, 4) / 64.0
y = x.sum(axis=1, keepdims=True)
options = tf.data.Options()
options.experimental_distribute.auto_shard_policy = tf.data.experimental.AutoShardPolicy.OFF
data = tf.data.Dataset.from_tensor_slices((x, y)).batch(8).repeat().with_options(options)

with strategy.scope():
    model = tf.keras.Sequential([tf.keras.layers.Dense(1, input_shape=(4,))])
    model.compile(optimizer="sgd", loss="mse")
history = model.fit(data, epochs=1, steps_per_epoch=4, verbose=0)

print(
    f"job done: worker {task['index']} of {strategy.num_replicas_in_sync}, "
    f"loss {history.history['loss'][-1]:.4f}",
    flush=True,
)
