"""The metric writer: a resumed run's record drops what a killed run wrote after its last checkpoint."""

import glob
import json
import os
import struct

from tensorboardX.proto import event_pb2

from gpt_jax import metrics


def _events(logdir):
  """Every Event in the TensorBoard files under logdir (TFRecord framing: length, crc, data, crc)."""
  events = []
  for path in sorted(glob.glob(os.path.join(logdir, 'events.*'))):
    data = open(path, 'rb').read()
    offset = 0
    while offset < len(data):
      length, = struct.unpack('<Q', data[offset:offset + 8])
      events.append(event_pb2.Event.FromString(data[offset + 12:offset + 12 + length]))
      offset += 12 + length + 4
  return events


def test_resume_drops_records_after_the_checkpoint_and_purges_tensorboard(tmp_path):
  writer = metrics.MetricWriter(str(tmp_path), total_tokens=600)
  for step in range(1, 7):
    writer.write(step, {'loss': 1.0 / step}, tokens=100 * step)
  writer.close()
  with open(tmp_path / 'metrics.jsonl', 'a') as f:
    f.write('{"step": 7, "train/lo')  # a write torn by kill -9
  resumed = metrics.MetricWriter(str(tmp_path), total_tokens=600, resume_step=4)
  resumed.write(5, {'loss': 0.5}, tokens=500)
  resumed.close()
  steps = [json.loads(line)['step'] for line in open(tmp_path / 'metrics.jsonl')]
  assert steps == [1, 2, 3, 4, 5]
  starts = [e.step for e in _events(tmp_path / 'tb') if e.HasField('session_log')
            and e.session_log.status == event_pb2.SessionLog.START]
  assert 5 in starts  # TensorBoard hides every event at step >= 5 written before this point
