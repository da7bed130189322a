"""What tests and users share: launching N ranks on one machine (`dist`) and storage / decision stores that
fail on purpose, by phase and rank (`faults`). Import the submodules; nothing here loads torch eagerly."""
