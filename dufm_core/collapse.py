"""Neural-collapse metrics (docs/theory.md §2.2, §6.4, §6.5): class means, DNC1–DNC3, effective
ranks.

All metrics work in the K-dimensional span of the class means, so no d×d matrix is formed:
with centred means M_c = M − μ_G 1ᵀ = U S Vᵀ (thin SVD, rank r ≤ K−1),
Σ_B = (1/K) M_c M_cᵀ has pseudo-inverse U diag(K/s_j²) Uᵀ, and with H_c = H − M[:, labels],
Σ_W u_j = (1/N) H_c (H_cᵀ u_j). Hence

    NC1      = (1/K) tr(Σ_W Σ_B^†) = (1/K) Σ_j (K/s_j²) ‖H_cᵀ u_j‖² / N   (Papyan et al.)
    NC1_fro  = ‖Σ_W Σ_B^†‖_F²      = ‖(1/N) H_c H_cᵀ U diag(K/s_j²)‖_F²     (the reproduction's)
    NC1_ratio = tr Σ_W / tr Σ_B.

Which DNC2/DNC3 frame applies depends on the loss: the bias-free MSE optimum has *orthogonal*
uncentred means (M ᵀM ∝ I_K, rows of W_l in span{μ_c}), the CE optimum a centred simplex ETF.
"""

from __future__ import annotations

import math

import torch


def class_means(H: torch.Tensor, labels: torch.Tensor, K: int) -> torch.Tensor:
    """Class means M (d × K) of the columns of H (d × N)."""
    onehot = torch.nn.functional.one_hot(labels, K).to(H.dtype)
    counts = onehot.sum(0).clamp_min(1)
    return (H @ onehot) / counts


def _orth_basis(M: torch.Tensor, rtol: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Orthonormal basis U of the column span of M and the singular values kept (> rtol·max)."""
    U, s, _ = torch.linalg.svd(M, full_matrices=False)
    if s.numel() == 0 or float(s[0]) == 0.0:
        return U[:, :0], s[:0]
    keep = s > rtol * s[0]
    return U[:, keep], s[keep]


def _rtol(t: torch.Tensor) -> float:
    return 1e-10 if t.dtype == torch.float64 else 1e-5


def nc1(
    H: torch.Tensor, labels: torch.Tensor, K: int, M: torch.Tensor | None = None
) -> dict[str, float]:
    """DNC1 variants for features H (d × N): ``nc1`` (Papyan), ``nc1_fro``, ``nc1_ratio``.

    NaN when the between-class scatter is zero (all class means equal: nothing to compare to).
    """
    if M is None:
        M = class_means(H, labels, K)
    N = H.shape[1]
    Hc = H - M[:, labels]
    Mc = M - M.mean(1, keepdim=True)
    tr_w = float(Hc.square().sum()) / N
    tr_b = float(Mc.square().sum()) / K
    U, s = _orth_basis(Mc, _rtol(H))
    if s.numel() == 0:
        return {"nc1": math.nan, "nc1_fro": math.nan, "nc1_ratio": math.nan}
    P = Hc.T @ U  # N × r
    inv = K / s.square()  # eigenvalues of Σ_B^† on span U
    nc1_trace = float((P.square().sum(0) / N * inv).sum()) / K
    sw_u = (Hc @ P) / N  # Σ_W U, d × r
    nc1_fro = float((sw_u * inv).square().sum())
    return {
        "nc1": nc1_trace,
        "nc1_fro": nc1_fro,
        "nc1_ratio": tr_w / tr_b if tr_b > 0 else math.nan,
    }


def nc2(M: torch.Tensor, frame: str = "orthogonal") -> float:
    """DNC2: distance of the normalised Gram of the means from the ideal frame.

    ``orthogonal`` (bias-free MSE): ‖MᵀM/‖MᵀM‖_F − I_K/√K‖_F on uncentred means.
    ``etf`` (CE / centred): the same on the centred Gram against S/‖S‖_F, S = I − 11ᵀ/K.
    """
    K = M.shape[1]
    eye = torch.eye(K, dtype=M.dtype, device=M.device)
    if frame == "etf":
        M = M - M.mean(1, keepdim=True)
        target = eye - 1.0 / K
    else:
        target = eye
    G = M.T @ M
    g = torch.linalg.matrix_norm(G)
    if float(g) == 0.0:
        return math.nan
    return float(torch.linalg.matrix_norm(G / g - target / torch.linalg.matrix_norm(target)))


def nc3(W: torch.Tensor, M: torch.Tensor, frame: str = "orthogonal") -> float:
    """DNC3: fraction of W's Frobenius energy outside the span of the input means,
    ‖W(I − P_M)‖_F² / ‖W‖_F². The span is of the uncentred means for ``orthogonal`` (MSE:
    rows of W_l = σ_l Σ_c μ̂_c^{(l+1)} μ̂_c^{(l)ᵀ} live there) and of the centred ones for ``etf``."""
    if frame == "etf":
        M = M - M.mean(1, keepdim=True)
    w2 = float(W.square().sum())
    if w2 == 0.0:
        return math.nan
    U, _ = _orth_basis(M, _rtol(W))
    outside = W - (W @ U) @ U.T
    return float(outside.square().sum()) / w2


def effective_rank(s: torch.Tensor) -> float:
    """Roy & Vetterli effective rank exp(−Σ p_i log p_i), p_i = s_i / Σ s_j (s ≥ 0)."""
    s = s[s > 0]
    if s.numel() == 0:
        return 0.0
    p = s / s.sum()
    return float(torch.exp(-(p * p.log()).sum()))


def stable_rank(s: torch.Tensor) -> float:
    """Stable rank ‖X‖_F² / ‖X‖_2² from singular values s."""
    if s.numel() == 0 or float(s.max()) == 0.0:
        return 0.0
    return float(s.square().sum() / s.max().square())


def threshold_rank(s: torch.Tensor, threshold: float = 1e-6) -> int:
    """Number of singular values above ``threshold`` (the companion paper counts > 1e-6)."""
    return int((s > threshold).sum())


def nc4(H: torch.Tensor, predicted: torch.Tensor, M: torch.Tensor) -> float:
    """NC4 (Papyan et al. 2020): how often the network's prediction agrees with the
    nearest-class-centre classifier on features H (d × N),

        NC4 = (1/N) Σ_i 1[ argmin_c ‖h_i − μ_c‖ = ŷ_i ],

    with ``predicted`` ŷ (N,) the network's argmax and M (d × K) the class centres (for test
    data, the *training* centres: the classifier a collapsed network would use). 1 at collapse;
    NaN for N = 0."""
    if H.shape[1] == 0:
        return math.nan
    # ‖h − μ_c‖² = ‖h‖² − 2 hᵀμ_c + ‖μ_c‖²; the ‖h‖² term does not change the argmin
    dist = M.square().sum(0)[None, :] - 2.0 * (H.T @ M)
    nearest = dist.argmin(dim=1)
    return float((nearest == predicted.to(nearest.device)).double().mean())


def cdnv(H: torch.Tensor, labels: torch.Tensor, K: int) -> float:
    """Class-distance normalised variance (Galanti et al. 2022) of features H (d × N), averaged
    over the pairs of classes present,

        CDNV = mean_{c < c'} (Var_c + Var_c') / (2 ‖μ_c − μ_c'‖²),
        Var_c = mean_{i ∈ c} ‖h_i − μ_c‖²;

    0 at collapse. NaN when fewer than two classes are present or two class means coincide."""
    onehot = torch.nn.functional.one_hot(labels, K).to(H.dtype)
    counts = onehot.sum(0)
    present = torch.nonzero(counts > 0).flatten()
    if present.numel() < 2:
        return math.nan
    M = class_means(H, labels, K)
    var = ((H - M[:, labels]).square().sum(0) @ onehot) / counts.clamp_min(1)
    Mp, vp = M[:, present], var[present]
    sq = Mp.square().sum(0)
    dist2 = sq[:, None] + sq[None, :] - 2.0 * (Mp.T @ Mp)
    iu = torch.triu_indices(present.numel(), present.numel(), offset=1)
    d2 = dist2[iu[0], iu[1]]
    if float(d2.min()) <= 0.0:
        return math.nan
    return float(((vp[iu[0]] + vp[iu[1]]) / (2.0 * d2)).mean())
