"""Rebuild the demo bundle's weights and the sample input volume (CPU, about a minute).

    python -m vlm_medical.make_bundle_demo

It lives outside the bundle folder, because a bundle that ships Python code is refused unless
the operator passes ``trust_code``. The network comes from the bundle's own
``configs/inference.json`` (read and checked the way ``medical.bundle`` reads it), is trained
on volumes from MONAI's synthetic generator (``create_test_image_3d``: bright spheres in
noise) with a random intensity gain and offset, and is measured on held-out volumes through
the bundle's sliding-window settings. The weights go to the bundle's
``models/model.safetensors``; the sample input to ``samples/bundle-demo-input.nii.gz``.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np
import torch
from monai.bundle import ConfigParser
from monai.data.synthetic import create_test_image_3d
from monai.inferers import SlidingWindowInferer
from monai.losses import DiceCELoss
from monai.metrics import DiceMetric
from monai.networks import one_hot
from safetensors.torch import save_file

from vlm_core.export.volumes import write_nifti
from vlm_medical.bundle_check import check_config
from vlm_medical.bundle_safety import read_bundle_config

BUNDLE = Path(__file__).resolve().parent / "samples" / "bundle-demo"
SEED, STEPS, BATCH, LR = 0, 300, 8, 3e-3
log = logging.getLogger("make_demo")


def synthetic(rng: np.random.RandomState, shape: tuple[int, int, int]) -> tuple[np.ndarray, ...]:
    """An (image, label) pair; the image has a random gain and offset like a scanner's."""
    image, label = create_test_image_3d(
        *shape,
        num_objs=int(rng.randint(2, 7)),
        rad_max=8,
        rad_min=3,
        noise_max=float(rng.uniform(0.1, 0.4)),
        num_seg_classes=1,
        random_state=rng,
    )
    image = image * rng.uniform(200, 1200) + rng.uniform(-300, 300)
    return image.astype(np.float32), (label > 0).astype(np.int64)


def scaled(image: np.ndarray) -> torch.Tensor:
    """What the bundle's ScaleIntensityd does: min-max to [0, 1]."""
    lo, hi = float(image.min()), float(image.max())
    return torch.from_numpy((image - lo) / max(hi - lo, 1e-8))


def network() -> torch.nn.Module:
    config = BUNDLE / "configs" / "inference.json"
    tree = read_bundle_config(config, BUNDLE / "configs" / "metadata.json", BUNDLE, "bundle-demo")
    checked = check_config(tree, ["network_def"], "bundle-demo")
    parser = ConfigParser(config=checked.config, globals=checked.globals)
    return parser.get_parsed_content("network_def")


def main() -> None:
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    torch.manual_seed(SEED)
    rng = np.random.RandomState(SEED)
    net = network()
    loss_fn = DiceCELoss(to_onehot_y=True, softmax=True)
    optimizer = torch.optim.Adam(net.parameters(), lr=LR)
    net.train()
    for step in range(STEPS):
        pairs = [synthetic(rng, (32, 32, 32)) for _ in range(BATCH)]
        images = torch.stack([scaled(i)[None] for i, _ in pairs])
        labels = torch.stack([torch.from_numpy(lab)[None] for _, lab in pairs])
        optimizer.zero_grad()
        loss = loss_fn(net(images), labels)
        loss.backward()
        optimizer.step()
        if step % 50 == 0 or step == STEPS - 1:
            log.info("step %d loss %.4f", step, loss.item())
    net.eval()
    inferer = SlidingWindowInferer(roi_size=(32, 32, 32), sw_batch_size=4, overlap=0.25)
    dice = DiceMetric(include_background=False)
    held_out = np.random.RandomState(SEED + 1)
    with torch.no_grad():
        for _ in range(16):
            image, label = synthetic(held_out, (48, 48, 32))
            pred = inferer(scaled(image)[None, None], net).argmax(1, keepdim=True)
            dice(one_hot(pred, 2), one_hot(torch.from_numpy(label)[None, None], 2))
    mean_dice = float(dice.aggregate().item())
    state = {k: v.detach().contiguous() for k, v in net.state_dict().items()}
    save_file(state, BUNDLE / "models" / "model.safetensors", metadata={"format": "pt"})
    image, _ = synthetic(np.random.RandomState(SEED + 2), (48, 48, 32))
    affine = np.array([[1.5, 0, 0, -36.0], [0, 1.5, 0, -36.0], [0, 0, 2.0, -32.0], [0, 0, 0, 1]])
    write_nifti(
        np.round(image).astype(np.int16), affine, BUNDLE.parent / "bundle-demo-input.nii.gz"
    )
    summary = {"seed": SEED, "steps": STEPS, "batch": BATCH, "lr": LR, "held_out": 16,
               "mean_dice": round(mean_dice, 4)}  # fmt: skip
    log.info("%s", json.dumps(summary))


if __name__ == "__main__":
    main()
