"""kubernetes-asyncio without its generated models: the product's processes use only its REST machinery.

The package's ``__init__`` modules import every API class and every model (about 1,600 modules): some 40 MB of
memory and more than a second of start-up in each process, for classes the product never uses — it speaks plain
JSON through ``ApiClient.call_api`` (kubeio/rest.py). ``install()`` registers ``kubernetes_asyncio`` and
``kubernetes_asyncio.client`` as bare packages over the installed files, with an empty ``models`` module, then loads
what the product uses: ``Configuration``, ``ApiClient`` (and its ``rest`` layer) and ``ApiException``. ``config`` is
a bare package too: ``kubeio.client`` imports the one loader it needs, so a pod (in-cluster) never loads the
kubeconfig loader's YAML parser, exec and OIDC providers. The library stays the library: the same
files, the same code paths; only the imports nobody needs are skipped. A process that imported the full package
first keeps it (``install`` then does nothing), which is what the tests do.

``tests/unit/test_lean_client.py`` checks that the lean client loads a kubeconfig and that the full package is not
imported; every e2e test runs the processes on it.
"""

from __future__ import annotations

import importlib
import importlib.util
import sys
import types
from pathlib import Path

PACKAGE = "kubernetes_asyncio"


def install() -> bool:
    """Make later imports of kubernetes_asyncio lean; False when the full package was imported already."""
    if PACKAGE in sys.modules:
        return False
    spec = importlib.util.find_spec(PACKAGE)
    if spec is None or spec.origin is None:
        return False  # not installed: the import will fail where it is made, with the usual error
    root = Path(spec.origin).parent
    top = types.ModuleType(PACKAGE)
    top.__path__ = [str(root)]
    top.__file__ = spec.origin
    client = types.ModuleType(f"{PACKAGE}.client")
    client.__path__ = [str(root / "client")]
    client.__file__ = str(root / "client" / "__init__.py")
    models = types.ModuleType(f"{PACKAGE}.client.models")  # never used: answers are not decoded into models
    config = types.ModuleType(f"{PACKAGE}.config")
    config.__path__ = [str(root / "config")]
    config.__file__ = str(root / "config" / "__init__.py")
    sys.modules[PACKAGE] = top
    sys.modules[client.__name__] = client
    sys.modules[models.__name__] = models
    sys.modules[config.__name__] = config
    top.client = client  # type: ignore[attr-defined]
    top.config = config  # type: ignore[attr-defined]
    client.models = models  # type: ignore[attr-defined]
    configuration = importlib.import_module(f"{PACKAGE}.client.configuration")
    exceptions = importlib.import_module(f"{PACKAGE}.client.exceptions")
    api_client = importlib.import_module(f"{PACKAGE}.client.api_client")
    client.Configuration = configuration.Configuration  # type: ignore[attr-defined]
    client.ApiClient = api_client.ApiClient  # type: ignore[attr-defined]
    client.ApiException = exceptions.ApiException  # type: ignore[attr-defined]
    return True
