"""The probe itself: standardise, optional PCA, L2 logistic regression (scikit-learn) -> a torch
:class:`reminder.Detector`; the validation threshold and the pair-level report."""

from __future__ import annotations

import numpy as np
import torch

from reminder import Detector


def fit_probe(x: np.ndarray, y: np.ndarray, n_components: int = 0, c: float = 0.1, seed: int = 0) -> Detector:
    """Standardise (+ PCA to ``n_components``) + L2 logistic regression on ``x`` [N, d], as a torch Detector."""
    from sklearn.decomposition import PCA
    from sklearn.linear_model import LogisticRegression
    from sklearn.preprocessing import StandardScaler

    if len(set(y.tolist())) < 2:
        raise ValueError("the detector needs both harmful and benign examples")
    scaler = StandardScaler().fit(x)
    z = scaler.transform(x)
    pca = PCA(n_components, random_state=seed).fit(z) if n_components else None
    if pca is not None:
        z = pca.transform(z)
    clf = LogisticRegression(C=c, max_iter=2000).fit(z, y)
    w, b = clf.coef_[0], float(clf.intercept_[0])
    components = None
    if pca is not None:  # PCA centres too: w·C(z - m) + b = w·Cz + (b - w·Cm)
        b -= float(w @ pca.components_ @ pca.mean_)
        components = torch.tensor(pca.components_, dtype=torch.float32)
    scale = np.where(scaler.scale_ > 0, scaler.scale_, 1.0)
    return Detector(torch.tensor(scaler.mean_, dtype=torch.float32), torch.tensor(scale, dtype=torch.float32),
                    torch.tensor(w, dtype=torch.float32), torch.tensor(b), components)


def choose_threshold(p: np.ndarray, y: np.ndarray, max_fpr: float = 0.02) -> float:
    """The threshold with the best TPR - FPR among those with FPR <= ``max_fpr`` (on validation scores).

    It sits halfway between the chosen score and the next lower one, so that unseen scores near either side of the
    gap are not decided by the validation set's exact values.
    """
    best, best_t = -1.0, float(np.max(p)) + 1e-6
    for t in np.unique(p):
        fpr = float(np.mean(p[y == 0] >= t)) if (y == 0).any() else 0.0
        tpr = float(np.mean(p[y == 1] >= t)) if (y == 1).any() else 0.0
        if fpr <= max_fpr and tpr - fpr > best:
            best, best_t = tpr - fpr, float(t)
    below = p[p < best_t]
    return (best_t + float(below.max())) / 2 if below.size else best_t


def scores_report(p: np.ndarray, y: np.ndarray, threshold: float) -> dict:
    """AUROC and the confusion matrix at ``threshold``."""
    from sklearn.metrics import roc_auc_score

    pred = p >= threshold
    return {"auroc": float(roc_auc_score(y, p)) if len(set(y.tolist())) == 2 else None, "n": int(len(y)),
            "tp": int((pred & (y == 1)).sum()), "fp": int((pred & (y == 0)).sum()),
            "tn": int((~pred & (y == 0)).sum()), "fn": int((~pred & (y == 1)).sum())}


def probe_scores(detector: Detector, feats: torch.Tensor) -> np.ndarray:
    with torch.no_grad():
        return detector(feats).numpy()
