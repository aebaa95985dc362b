"""The paper's published numbers (PROTOCOL section 7), for side-by-side comparison. Test
accuracy in percent on CIFAR-10."""

BUDGETS = (1_000_000, 3_160_000, 10_000_000, 31_600_000)

#: Table 2: students mimicking the 16-teacher ensemble, per budget.
MIMIC = {
    "mlp1": (65.8, 68.2, 69.5, 70.2),
    "mlp2": (66.2, 70.9, 73.4, 74.3),
    "mlp3": (66.8, 71.0, 73.0, 73.9),
    "mlp4": (66.7, 69.5, 71.6, 72.0),
    "mlp5": (66.4, 70.0, 71.4, 71.5),
    "conv1": (84.5, 86.3, 87.3, 87.7),
    "conv2": (87.9, 89.3, 90.0, 90.3),
    "conv3": (90.7, 91.6, 91.9, 92.3),
    "conv4": (91.3, 91.8, 92.6, 92.6),
}

#: Table 1: the same architectures trained on hard 0/1 labels at 10M parameters.
HARD_10M = {"conv1": 84.6, "conv2": 88.9, "conv3": 91.2, "conv4": 91.75}

ENSEMBLE = {"test": 93.8, "val": 94.0, "params": 83_400_000, "members": 16}
BEST_TEACHER = {"spec": "76c2-mp-126c2-mp-148c4-mp-1200fc2", "test": 92.78, "params": 5_300_000}
BA_CARUANA = {"spec": "128c-p-1200L-30k", "params": 70_000_000, "test": 85.8, "teacher_test": 89.0}
