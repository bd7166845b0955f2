"""Package look-ups as ROS 2 does them (ament index), with fallbacks for a pip/venv checkout.

ROS 2 finds a package through the ament resource index: the first prefix in
``AMENT_PREFIX_PATH`` holding ``share/ament_index/resource_index/packages/<pkg>``. Its share
directory is ``<prefix>/share/<pkg>`` and its executables are ``<prefix>/lib/<pkg>/<exec>``.
The look-ups go through ``ament_index_python``, as launch_ros does. Without a colcon install,
this package's launch/config files are found in the source tree and its nodes run as
``python -m mbrl_ros.nodes.<exec>``.
"""

import contextlib
import difflib
import importlib.util
import logging
import os
import shutil
import sys
import threading
from pathlib import Path
from typing import Iterator, List, Mapping, Optional

from ament_index_python.packages import (PackageNotFoundError, get_package_prefix,
                                         get_package_share_directory, get_packages_with_prefixes)

from mbrl_ros.launch_runner.errors import LaunchError

logger = logging.getLogger(__name__)

#: The package whose files and nodes have source-tree fallbacks.
THIS_PACKAGE = 'mbrl_ros'
#: Sub-package holding this package's node modules (each with ``main(args=None)``).
NODES_MODULE = 'mbrl_ros.nodes'
#: Marker directory of the ament index, relative to an install prefix.
AMENT_INDEX_PACKAGES = Path('share') / 'ament_index' / 'resource_index' / 'packages'
#: The variable ament_index_python reads its prefixes from.
AMENT_PREFIX_PATH = 'AMENT_PREFIX_PATH'

_environment_lock = threading.Lock()


def ament_prefixes(environment: Optional[Mapping[str, str]] = None) -> List[str]:
    """Return the install prefixes listed in ``AMENT_PREFIX_PATH``, in search order."""
    env = os.environ if environment is None else environment
    return [p for p in env.get(AMENT_PREFIX_PATH, '').split(os.pathsep) if p]


@contextlib.contextmanager
def _ament_index_of(environment: Optional[Mapping[str, str]]) -> Iterator[None]:
    """Let ament_index_python, which reads ``os.environ``, see ``environment``'s prefixes.

    Like launch's own ``SetEnvironmentVariable``, this sets the variable in this process, here
    only for the duration of one look-up (launch files are resolved before any process starts).
    """
    wanted = None if environment is None else environment.get(AMENT_PREFIX_PATH)
    if environment is None or wanted == os.environ.get(AMENT_PREFIX_PATH):
        yield
        return
    with _environment_lock:
        saved = os.environ.get(AMENT_PREFIX_PATH)
        if wanted is None:
            os.environ.pop(AMENT_PREFIX_PATH, None)
        else:
            os.environ[AMENT_PREFIX_PATH] = wanted
        try:
            yield
        finally:
            if saved is None:
                os.environ.pop(AMENT_PREFIX_PATH, None)
            else:
                os.environ[AMENT_PREFIX_PATH] = saved


def _indexed_share(package: str, environment: Optional[Mapping[str, str]]) -> Optional[str]:
    """Share directory of ``package`` from the ament index, or None if it is not indexed."""
    with _ament_index_of(environment):
        try:
            return get_package_share_directory(package, print_warning=False)
        except (PackageNotFoundError, ValueError, OSError):  # unknown, bad name, no index set
            return None


def find_package_prefix(package: str,
                        environment: Optional[Mapping[str, str]] = None) -> Optional[str]:
    """Return the install prefix of ``package`` from the ament index, or None if absent."""
    with _ament_index_of(environment):
        try:
            return get_package_prefix(package)
        except (PackageNotFoundError, ValueError, OSError):  # unknown, bad name, no index set
            return None


def _not_found(package: str, environment: Optional[Mapping[str, str]]) -> LaunchError:
    with _ament_index_of(environment):
        try:
            known = list(get_packages_with_prefixes())
        except OSError:  # AMENT_PREFIX_PATH not set
            known = []
    close = difflib.get_close_matches(package, known, n=3)
    hint = f"; did you mean {', '.join(repr(name) for name in close)}?" if close else ''
    return LaunchError(f"package '{package}' not found in the ament index "
                       f"(AMENT_PREFIX_PATH={ament_prefixes(environment)}){hint}")


def source_tree_root() -> Optional[str]:
    """Return this package's source root (the folder holding ``launch/``), or None."""
    root = Path(__file__).resolve().parent.parent.parent
    if (root / 'launch').is_dir() and (root / THIS_PACKAGE).is_dir():
        return str(root)
    return None


def package_prefix(package: str, environment: Optional[Mapping[str, str]] = None) -> str:
    """Return what ``$(find-pkg-prefix package)`` gives; raise LaunchError if unknown."""
    prefix = find_package_prefix(package, environment)
    if prefix is not None:
        return prefix
    if package == THIS_PACKAGE and source_tree_root() is not None:
        return source_tree_root()
    raise _not_found(package, environment)


def package_share(package: str, environment: Optional[Mapping[str, str]] = None) -> str:
    """Return what ``$(find-pkg-share package)`` gives; raise LaunchError if unknown."""
    share = _indexed_share(package, environment)
    if share is not None:
        return share
    if package == THIS_PACKAGE and source_tree_root() is not None:
        return source_tree_root()
    raise _not_found(package, environment)


def find_file_in_package(package: str, file_name: str) -> str:
    """Find ``file_name`` under the share directory of ``package`` as ``ros2 launch`` does.

    Raises LaunchError when the file is missing or found more than once.
    """
    share = package_share(package)
    if find_package_prefix(package) is None:  # source-tree fallback: only its launch/ folder
        share = str(Path(share) / 'launch')
    matches = []
    for root, dirs, files in os.walk(share):
        dirs[:] = sorted(d for d in dirs if not d.startswith('.'))
        matches.extend(os.path.join(root, name) for name in files if name == file_name)
    if not matches:
        raise LaunchError(f"file '{file_name}' was not found in the share directory of "
                          f"package '{package}' which is at '{share}'")
    if len(matches) > 1:
        raise LaunchError(f"file '{file_name}' was found more than once in the share "
                          f"directory of package '{package}': {matches}")
    return matches[0]


def _is_executable_file(path: Path) -> bool:
    return path.is_file() and os.access(path, os.X_OK)


def resolve_executable(package: Optional[str], executable: str,
                       environment: Optional[Mapping[str, str]] = None) -> List[str]:
    """Return the command prefix that runs ``executable`` of ``package``.

    Order: ``<prefix>/lib/<package>/<executable>`` from the ament index; an executable of
    that name on PATH; for this package, ``python -m mbrl_ros.nodes.<executable>``.
    Without a package, ``executable`` is a path or a name on PATH, as in launch_ros.
    Raises LaunchError when nothing is found.
    """
    env = os.environ if environment is None else environment
    search_path = env.get('PATH', os.defpath)
    if package is None:
        if os.sep in executable:
            if _is_executable_file(Path(executable)):
                return [executable]
            raise LaunchError(f"executable '{executable}' does not exist or is not executable")
        found = shutil.which(executable, path=search_path)
        if found is None:
            raise LaunchError(f"executable '{executable}' not found on PATH")
        return [found]
    prefix = find_package_prefix(package, env)
    if prefix is not None:
        candidate = Path(prefix) / 'lib' / package / executable
        if _is_executable_file(candidate):
            return [str(candidate)]
    found = shutil.which(executable, path=search_path)
    if found is not None:
        logger.debug("'%s' of package '%s' taken from PATH: %s", executable, package, found)
        return [found]
    if package == THIS_PACKAGE:
        module = f'{NODES_MODULE}.{executable}'
        try:
            spec = importlib.util.find_spec(module)
        except (ImportError, ValueError):
            spec = None
        if spec is not None:
            return [sys.executable, '-m', module]
    raise LaunchError(
        f"executable '{executable}' not found for package '{package}' (looked in the ament "
        f"index under lib/{package}/, on PATH"
        + (f", and for module {NODES_MODULE}.{executable}" if package == THIS_PACKAGE else '')
        + ')')
