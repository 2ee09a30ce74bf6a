"""Profiles: TOML files that describe a development environment (docs/profiles.md).

The data half of `sbx run PROFILE`; the run half (setup-step layers, keep-id shells,
named volume storage) lives in the CLI and runtime and calls these modules:

  errors.py    ProfileError, with every problem as "FILE:LINE: key.path: message"
  load.py      discovery by name (./sbx.toml, ./.sbx, the user's config, bundled),
               TOML syntax errors with file:line:col, `extends` chains, Profile objects
  schema.py    the keys, their types and normal forms; pure validation
  merge.py     how a profile's tables and lists combine with the one it extends
  model.py     Profile and `to_run_options`: what a run needs, with host variables
               expanded, inputs found and hashed, and setup-layer cache keys
  lock.py      sbx.lock: reading, writing (tomlwrite) and checking against profiles
  kube.py      a Kubernetes Pod manifest for a profile, as YAML or JSON
  starter.py   the starter sbx.toml that `sbx profile init` writes
  tomlwrite.py a small TOML writer (tomllib only reads)

Nothing here imports the runtime, the image store or the registry: image digests
come in through an injected `resolve_digest(reference) -> digest` callable. This
package's import is free; `sbx run IMAGE` only pays for `load.is_profile_reference`,
which stats a few files and parses ./sbx.toml only when there is one.
"""
