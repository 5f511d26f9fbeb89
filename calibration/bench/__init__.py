"""fleetsim.calibration.bench."""
