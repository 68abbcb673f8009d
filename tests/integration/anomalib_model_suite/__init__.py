# Copyright (C) 2023-2024 Intel Corporation
# SPDX-License-Identifier: Apache-2.0

"""anomalib's model integration suite (``tests/integration/model`` of open-edge-platform/anomalib), trimmed."""
