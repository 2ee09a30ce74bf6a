"""Host probes: what this machine and this user allow sbx to do.

`checks` runs the probes behind `sbx system check` and `sbx info`; `subid` reads
/etc/subuid and /etc/subgid for the runtime's id mapping. Nothing here prints or
exits (that is `sandbox.cli`'s job), and nothing here imports `sandbox.cli`.
"""
