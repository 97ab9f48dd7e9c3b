"""CLIPSeg multi-region guidance (Sec. 3.1, Eqs. 2-4 of the paper)."""
