"""The VP diffusion of molecules: schedule, process, objective, samplers, sampling."""
