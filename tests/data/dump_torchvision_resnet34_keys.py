"""Write torchvision_resnet34_keys.json: every key of torchvision's ``resnet34`` state dict and its shape.

tests/test_student_resnet.py checks the student's resnet34 trunk against it (the classifier ``fc.*`` aside), so
torchvision's ImageNet file loads into the trunk unchanged. The project's pinned CPU torch has no importable
torchvision, so the file was produced once in a throwaway environment outside the repository:

    python3.11 -m venv /tmp/tvenv && /tmp/tvenv/bin/pip install torch==2.14.1 torchvision==0.29.1
    /tmp/tvenv/bin/python tests/data/dump_torchvision_resnet34_keys.py

(no download: ``weights=None`` builds the network only).
"""

import json
from pathlib import Path

import torch
import torchvision

model = torchvision.models.resnet34(weights=None)
keys = {key: list(value.shape) for key, value in model.state_dict().items()}
out = Path(__file__).with_name("torchvision_resnet34_keys.json")
lines = [f"  {json.dumps(key)}: {json.dumps(shape)}" for key, shape in keys.items()]
versions = f'"torch": {json.dumps(torch.__version__)}, "torchvision": {json.dumps(torchvision.__version__)}'
out.write_text("{" + versions + ', "state_dict": {\n' + ",\n".join(lines) + "\n}}\n")
print(f"{out}: {len(keys)} keys")
