"""medcf.eval"""
