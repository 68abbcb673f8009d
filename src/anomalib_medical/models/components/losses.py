"""Losses of the adversarial in-painting generators (SQUID Sec. 3.4-3.5, SimSID Sec. 3.4-3.5).

Weights default to the authors' configurations (the same for both papers' chest X-ray settings).
"""

import torch
from torch import nn
from torch.nn import functional as F

from .generator import GeneratorOutput


class InpaintingGeneratorLoss(nn.Module):
    """Generator objective: student and teacher reconstruction, distillation, adversarial terms.

    ``L = w_rec * MSE(student, x) + w_t * MSE(teacher, x) + w_dist * sum_l MSE(s_l, t_l)
    + w_adv * BCE(D(student), real)``.

    Args:
        reconstruction_weight: Student reconstruction weight (authors' ``recon_w``).
        teacher_weight: Teacher reconstruction weight (``t_w``).
        distillation_weight: Feature distillation weight (``dist_w``).
        adversarial_weight: Generator adversarial weight (``g_w``).

    """

    def __init__(
        self,
        reconstruction_weight: float = 10.0,
        teacher_weight: float = 0.01,
        distillation_weight: float = 0.001,
        adversarial_weight: float = 0.005,
    ) -> None:
        super().__init__()
        self.reconstruction_weight = reconstruction_weight
        self.teacher_weight = teacher_weight
        self.distillation_weight = distillation_weight
        self.adversarial_weight = adversarial_weight

    def forward(self, output: GeneratorOutput, fake_logits: torch.Tensor) -> dict[str, torch.Tensor]:
        """Return the weighted loss terms and their sum under ``"loss"``."""
        target = output.image
        terms = {
            "reconstruction": self.reconstruction_weight * F.mse_loss(output.reconstruction, target),
            "adversarial": self.adversarial_weight
            * F.binary_cross_entropy_with_logits(fake_logits, torch.ones_like(fake_logits)),
        }
        if output.teacher_reconstruction is not None:
            terms["teacher"] = self.teacher_weight * F.mse_loss(output.teacher_reconstruction, target)
            terms["distillation"] = (
                self.distillation_weight
                * torch.stack(
                    [
                        F.mse_loss(student, teacher)
                        for student, teacher in zip(output.student_features, output.teacher_features, strict=True)
                    ]
                ).sum()
            )
        terms["loss"] = torch.stack(list(terms.values())).sum()
        return terms


class DiscriminatorLoss(nn.Module):
    """Discriminator objective ``w_d * (BCE(D(x), real) + BCE(D(student), fake))``.

    Args:
        weight: Discriminator loss weight (authors' ``d_w``).

    """

    def __init__(self, weight: float = 0.005) -> None:
        super().__init__()
        self.weight = weight

    def forward(self, real_logits: torch.Tensor, fake_logits: torch.Tensor) -> torch.Tensor:
        """Return the weighted discriminator loss."""
        real = F.binary_cross_entropy_with_logits(real_logits, torch.ones_like(real_logits))
        fake = F.binary_cross_entropy_with_logits(fake_logits, torch.zeros_like(fake_logits))
        return self.weight * (real + fake)
