"""Data the service ships: the incident class table, the closed loop's states and transitions, code schemes."""

from pathlib import Path

#: This folder: open the tables as DATA_DIR / name.
DATA_DIR = Path(__file__).resolve().parent
