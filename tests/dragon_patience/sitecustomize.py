"""Test-only patience for Dragon's transport agents, for tests/test_multinode.py on an overloaded machine.

Dragon's local services give a node's transport agent ``dragon.infrastructure.facts.TA_PING_TIMEOUT`` (10 s,
a constant) to answer; when it is late they call ``communicate()`` on the agent, which is still running, and
hang until the runtime gives up 420 s later. On this 2-core machine at a load average of 80, four agents
took about 20 s to start, and a four-node runtime never came up. With ``IMPECCABLE_TEST_DRAGON_TA_PING_S`` set
(the multinode tests put this folder on PYTHONPATH and set it), the constant is raised as Dragon loads it;
otherwise this file does nothing. No production code path uses it.
"""

import os
import sys

_SECONDS = os.environ.get("IMPECCABLE_TEST_DRAGON_TA_PING_S")


class _Patience:
    """A meta-path finder that lets the real finders load the module, then raises the constant."""

    def find_spec(self, name, path=None, target=None):
        if name != "dragon.infrastructure.facts":
            return None
        for finder in sys.meta_path:
            if finder is self or not hasattr(finder, "find_spec"):
                continue
            spec = finder.find_spec(name, path, target)
            if spec is not None and spec.loader is not None:
                run = spec.loader.exec_module

                def exec_module(module, run=run):
                    run(module)
                    module.TA_PING_TIMEOUT = max(module.TA_PING_TIMEOUT, float(_SECONDS))

                spec.loader.exec_module = exec_module
                return spec
        return None


if _SECONDS:
    sys.meta_path.insert(0, _Patience())
