"""Linear algebra on implicit matrices: Hessian-vector products, Lanczos, trace and spectral
density. Knows nothing of models beyond a loss function and its parameters."""
