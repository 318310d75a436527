"""The sparkcnn command: its parser, commands and progress display."""
