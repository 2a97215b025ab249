"""Where downloaded files live, and fetching them safely.

- the cache root is `$MICROGRAD_GEN_HOME` if that variable is set, else `~/.cache/micrograd_gen`
  (never the package's own folder, which may be a read-only site-packages);
- weights go to `<root>/weights`, data sets to `<root>/datasets`.
- `$MICROGRAD_GEN_DATA` may point at a folder laid out like the project's shared data
  (mnist/, text/, images/, imdb/, faces/, weights/): local copies there are used first.

`fetch` downloads from the canonical URL into a temporary file beside the destination, checks the
hash, and only then renames it into place, so an interrupted or corrupted download never leaves a
file that looks complete.
"""
import hashlib
import os
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

class DownloadError(RuntimeError):
    pass


def cache_root():
    """$MICROGRAD_GEN_HOME, else ~/.cache/micrograd_gen: where downloads and conversions go."""
    value = os.environ.get("MICROGRAD_GEN_HOME")
    return Path(value).expanduser() if value else Path.home() / ".cache" / "micrograd_gen"


def weights_dir():
    return cache_root() / "weights"


def datasets_dir():
    return cache_root() / "datasets"


def shared_data_dir():
    """The folder named by $MICROGRAD_GEN_DATA, or None when unset or missing."""
    value = os.environ.get("MICROGRAD_GEN_DATA")
    if value and Path(value).expanduser().is_dir():
        return Path(value).expanduser()
    return None


def file_hash(path, algorithm="md5"):
    digest = hashlib.new(algorithm)
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def verify(path, md5=None, sha256=None):
    """Raise DownloadError when the file's hash is not the expected one."""
    for algorithm, expected in (("md5", md5), ("sha256", sha256)):
        if expected:
            actual = file_hash(path, algorithm)
            if actual != expected:
                raise DownloadError(f"{path}: {algorithm} is {actual}, expected {expected} "
                                    "(a truncated or different file)")


def fetch(url, dest, md5=None, sha256=None, log=None, timeout=60):
    """Download `url` to `dest` (a file path) unless a file with the right hash is already there."""
    dest = Path(dest)
    log = log or (lambda msg: print(msg, file=sys.stderr, flush=True))
    if dest.exists():
        verify(dest, md5, sha256)
        return dest
    partial = dest.with_name(dest.name + f".part{os.getpid()}")
    try:
        try:
            response = urllib.request.urlopen(url, timeout=timeout)
        except (urllib.error.URLError, OSError) as e:
            raise DownloadError(
                f"could not download {dest.name} from {url} ({e}); with no network, copy the file "
                f"to {dest} by hand") from e
        dest.parent.mkdir(parents=True, exist_ok=True)   # only once there is something to keep
        total = int(response.headers.get("Content-Length") or 0)
        done, started, last = 0, time.time(), 0.0
        with response, open(partial, "wb") as out:
            while True:
                block = response.read(1 << 20)
                if not block:
                    break
                out.write(block)
                done += len(block)
                now = time.time()
                if now - last > 1 or (total and done == total):
                    last = now
                    share = f" {100 * done / total:5.1f}%" if total else ""
                    rate = done / max(now - started, 1e-9) / 1e6
                    log(f"downloading {dest.name}: {done / 1e6:.1f} MB{share} ({rate:.1f} MB/s)")
        if total and done != total:
            raise DownloadError(f"{url}: got {done} of {total} bytes (connection dropped); try again")
        verify(partial, md5, sha256)
        os.replace(partial, dest)
    finally:
        if partial.exists():
            partial.unlink()
    return dest


def atomic_write(path, write):
    """Call write(tmp_path) and rename the result onto `path`: the old file survives any failure."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    # Keep the suffix: writers such as Pillow pick the format from it.
    tmp = path.with_name(f".{path.stem}.tmp{os.getpid()}{path.suffix}")
    try:
        write(tmp)
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()
    return path
