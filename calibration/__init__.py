"""fleetsim.calibration."""
