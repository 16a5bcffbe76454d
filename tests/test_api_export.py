import subprocess
import sys


def test_package_exports_track_without_importing_torch_up_front():
    code = (
        "import sys, napari_sam2\n"
        "assert 'torch' not in sys.modules, 'importing napari_sam2 loaded torch'\n"
        "from napari_sam2 import track\n"
        "from napari_sam2.api import track as api_track\n"
        "assert track is api_track\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)
