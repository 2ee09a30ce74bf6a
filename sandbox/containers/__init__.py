"""Containers with a life of their own: records, the monitor, logs and the lifecycle.

- store.py: container records (config, state, names, ids) under the data directory,
  written atomically under flock(2) locks, read without locks;
- procfs.py: whether a recorded process is still the one that was recorded (pid plus
  start time plus boot id), so a dead monitor or a reboot shows up as an exit;
- logs.py: the container's output in podman's k8s-file format, written and read;
- specjson.py: a runtime Spec to and from the JSON kept in a record;
- monitor.py: the process that runs a container, keeps its log, records its exit and
  reaps it: the `sbx run`/`start -a` process itself, or a detached one (conmon's job);
- lifecycle.py: start, stop, kill, wait and remove, over the store and the monitor;
- names.py: generated docker-style names and the rule a name must follow;
- rmtree.py: removing a writable layer without following links.

What `ps` and `inspect` show is the CLI's (sandbox/cli/ps.py, inspect.py).

This package may use `sandbox.runtime` (to run containers) and `sandbox.storage`,
but never the registry, and never prints: `sandbox.cli` does. The image store is the
CLI's business too: a record keeps the image's id, name and layer directories.
"""
