"""medcf.encoders"""
