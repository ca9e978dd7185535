"""Claude Code sessions as taskcast tasks, through its hooks (docs/claude-code.md):
``mapping`` (hook JSON and transcript → events, the hooks' answers; pure), ``hook`` (the
process each hook call runs), ``settings`` (merging taskcast's entries into Claude Code's
settings files)."""
