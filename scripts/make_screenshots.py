"""Screenshots of the SAM 2 widget in the real napari viewer, for docs/user_guide.md.

Run under a virtual display from the repository root:

    xvfb-run -s "-screen 0 1600x1000x24" python scripts/make_screenshots.py

It needs ``../shared`` beside the repository (the data and the mini test model). No trained
SAM 2 weights are available here, so the screenshots use the mini model with random weights:
its masks on propagated frames mean nothing; the screenshots show the workflow. Where a
screenshot should show sensible labels, the prompts are ground-truth masks given as mask
prompts (a mask prompt becomes the output on its frame).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import tifffile
import torch

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared"
OUT = ROOT / "docs" / "images"
WIDTH = 1280  # screenshots are scaled to this width and reduced to a palette (< 300 kB)


def mini_model():
    from napari_sam2.model import SAM2Config, build_sam2

    mini = SHARED / "reference" / "mini"
    values = json.loads((mini / "config.json").read_text())["values"]
    return build_sam2(SAM2Config.from_dict(values), checkpoint=mini / "weights.pt")


def wait_idle(widget) -> None:
    """Run the Qt event loop until the widget has no work left."""
    from qtpy.QtCore import QEventLoop, QTimer

    if not widget.busy:
        return
    loop = QEventLoop()
    widget.idle.connect(loop.quit)
    QTimer.singleShot(300_000, loop.quit)
    loop.exec_()
    widget.idle.disconnect(loop.quit)


def settle(viewer) -> None:
    from qtpy.QtWidgets import QApplication

    for _ in range(5):
        QApplication.processEvents()


def save(viewer, name: str) -> Path:
    from napari._qt.dialogs.qt_notification import NapariQtNotification
    from PIL import Image

    for toast in viewer.window._qt_window.findChildren(NapariQtNotification):
        toast.close()
    settle(viewer)
    pixels = viewer.screenshot(canvas_only=False, flash=False)
    image = Image.fromarray(np.asarray(pixels)[..., :3])
    height = round(image.height * WIDTH / image.width)
    image = image.resize((WIDTH, height), Image.LANCZOS).quantize(colors=160)
    path = OUT / name
    image.save(path, optimize=True)
    print(f"{path.relative_to(ROOT)}: {path.stat().st_size // 1024} kB")
    return path


def new_viewer():
    import napari

    viewer = napari.Viewer(show=True)
    viewer.window._qt_window.resize(1560, 960)
    _, widget = viewer.window.add_plugin_dock_widget("napari-sam2", "SAM 2 tracking")
    widget.use_model(mini_model(), "mini test model (random weights)")
    return viewer, widget


def click(points, coords, object_id: int, positive: bool = True) -> None:
    points.feature_defaults = {"object_id": object_id, "positive": positive}
    points.add([coords])


def centroid(mask: np.ndarray) -> tuple[float, float]:
    ys, xs = np.nonzero(mask)
    return float(ys.mean()), float(xs.mean())


def cells() -> None:
    """Walk-through 1: nuclei in a fluorescence time-lapse (CTC Fluo-N2DH-SIM)."""
    folder = SHARED / "data" / "ctc_sim_nuclei"
    images = tifffile.imread(folder / "images_tyx.tif")
    truth = tifffile.imread(folder / "labels_tyx.tif")
    viewer, widget = new_viewer()
    viewer.add_image(images, name="nuclei", colormap="gray")
    viewer.dims.axis_labels = ("t", "y", "x")
    points, shapes, masks = widget.new_prompt_layers()

    # Objects 1 and 2: clicks (one negative); object 3: a hand-drawn mask (here the ground truth).
    click(points, (0, *centroid(truth[0] == 3)), 1)
    y, x = centroid(truth[0] == 3)
    click(points, (0, y + 25, x + 25), 1, positive=False)
    click(points, (0, *centroid(truth[0] == 7)), 2)
    masks.data[0][truth[0] == 10] = 3
    masks.events.data(value=masks.data)
    widget.object_spin.setValue(3)
    wait_idle(widget)
    viewer.layers.selection.active = points
    widget.go_to_frame(0)
    save(viewer, "cells_prompts.png")

    # A second mask of object 3 on the last frame; propagate both ways between the prompts.
    masks.data[9][truth[9] == 10] = 3
    masks.events.data(value=masks.data)
    widget.direction_combo.setCurrentText("both")
    widget.propagate()
    wait_idle(widget)
    widget.go_to_frame(9)
    save(viewer, "cells_propagated.png")
    viewer.close()


def ct_lesion() -> None:
    """Walk-through 2: a lesion through a CT volume (anisotropic voxels, 5 mm slices)."""
    case = sorted((SHARED / "data" / "ct_lesion").iterdir())[0]
    with tifffile.TiffFile(case / "image_zyx.tif") as tif:
        volume = tif.asarray()
        meta = json.loads(tif.pages[0].description)
    truth = tifffile.imread(case / "lesion_zyx.tif")
    sx, sy, sz = meta["spacing_xyz_mm"]
    viewer, widget = new_viewer()
    viewer.add_image(volume, name="CT", colormap="gray", scale=(sz, sy, sx), units="mm")
    viewer.dims.axis_labels = ("z", "y", "x")
    points, shapes, masks = widget.new_prompt_layers()
    middle = int(np.argmax(truth.reshape(len(truth), -1).sum(axis=1)))
    widget.go_to_frame(middle)
    masks.data[middle][truth[middle] > 0] = 1
    masks.events.data(value=masks.data)
    wait_idle(widget)
    viewer.layers.selection.active = masks
    masks.visible = False
    viewer.camera.zoom = viewer.camera.zoom * 1.3
    ys, xs = np.nonzero(truth[middle])
    viewer.camera.center = (0, ys.mean() * sy, xs.mean() * sx)
    save(viewer, "ct_prompt.png")

    widget.direction_combo.setCurrentText("both")
    widget.propagate()
    wait_idle(widget)
    widget.go_to_frame(middle + 2)
    save(viewer, "ct_propagated.png")
    save_widget(widget, "ct_measurements.png")
    viewer.close()


def save_widget(widget, name: str) -> Path:
    """The dock widget alone (its lower panels are below the fold in a viewer screenshot)."""
    from PIL import Image

    settle(None)
    widget.resize(widget.width(), widget.sizeHint().height())
    path = OUT / name
    widget.grab().save(str(path))
    Image.open(path).convert("RGB").quantize(colors=160).save(path, optimize=True)
    print(f"{path.relative_to(ROOT)}: {path.stat().st_size // 1024} kB")
    return path


def main() -> int:
    if not SHARED.is_dir():
        print(f"{SHARED} is missing: the screenshots need the shared data and mini model")
        return 1
    torch.set_num_threads(2)
    OUT.mkdir(parents=True, exist_ok=True)
    from qtpy.QtWidgets import QApplication  # noqa: F401 - napari creates the application

    cells()
    ct_lesion()
    return 0


if __name__ == "__main__":
    sys.exit(main())
