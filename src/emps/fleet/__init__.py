"""Fleet packs: the format, and importing one."""
