"""The paper's theory as executable models: lattice, traces, adversary, explorer, optimizer, fleet, retry."""
