"""The `emps` commands, one module per area.

emps.cli imports a module the first time one of its commands is looked up (emps.cli.COMMANDS
says which module defines which command). A command imports what it runs inside its own
function, so that looking it up stays cheap: `emps --help` looks them all up.
"""
