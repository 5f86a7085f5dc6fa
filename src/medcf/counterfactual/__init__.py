"""medcf.counterfactual"""
