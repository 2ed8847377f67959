"""The Gaussian-mixture test bed of the guidance theory: exact scores and guidance
(:mod:`.mixture`), diffusion on vectors (:mod:`.vectors`), the theory's quantities
(:mod:`.theory`) and the checks that compare them (:mod:`.checks`)."""
