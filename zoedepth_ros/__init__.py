"""zoedepth_ros: ZoeDepth metric monocular depth in plain torch, with a ROS 2 node around it."""

import pkgutil as _pkgutil
import sys as _sys
from pathlib import Path as _Path

__version__ = "0.1.0"

# The generated interface code (zoedepth_ros.msg and its typesupport modules) may live in another directory
# than these sources: another prefix of a ROS overlay, or lib/zoedepth_ros_generated of a venv set up by
# scripts/build_interfaces.sh. Both are folded into this package's search path.
__path__ = _pkgutil.extend_path(__path__, __name__)
_generated = _Path(_sys.prefix) / "lib" / "zoedepth_ros_generated" / __name__
if _generated.is_dir() and str(_generated) not in __path__:
    __path__.append(str(_generated))
